"""Device choice: `auto` picks CUDA when present; asking for CUDA without one fails loudly (no silent CPU)."""

from __future__ import annotations

import torch

from facebatch.errors import InputError
from facebatch.nets.cpu_memory import keep_freed_memory


def resolve_device(name: str = "auto") -> torch.device:
    """The device a command computes on; on CPU also the allocator setting that CPU compute needs."""
    if name == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name} was asked for but torch sees no CUDA device (torch {torch.__version__})")
    if dev.type == "cpu":
        keep_freed_memory()
    return dev
