"""Device choice: `auto` picks CUDA when present; asking for CUDA without one fails loudly (no silent CPU)."""

from __future__ import annotations

import torch

from facebatch.errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name} was asked for but torch sees no CUDA device (torch {torch.__version__})")
    return dev
