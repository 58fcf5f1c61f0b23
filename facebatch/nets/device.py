"""Device choice: `auto` picks CUDA when present; asking for CUDA without one fails loudly (no silent CPU)."""

from __future__ import annotations

import re

import torch

from facebatch.errors import InputError
from facebatch.nets.cpu_memory import keep_freed_memory

DEVICES = "auto, cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def check_device(name: str) -> str:
    """A device name by its spelling alone: no CUDA query, so it also holds for a remote cluster's workers.

    Every command checks its --device with this before any work (a misspelling such as `gpu` would otherwise
    surface in each shard, or as torch's traceback); `resolve_device` checks it again for library callers.
    """
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        raise InputError(f"--device {name!r} is not a device: use {DEVICES}")
    return name


def resolve_device(name: str = "auto") -> torch.device:
    """The device a command computes on; on CPU also the allocator setting that CPU compute needs."""
    if check_device(name) == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name} was asked for but torch sees no CUDA device (torch {torch.__version__})")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    if dev.type == "cpu":
        keep_freed_memory()
    return dev
