"""facebatch's own checkpoint format: one .safetensors file, weights + the config that rebuilds them.

Tensors are named `G.<official NVlabs name>` and `D.<...>`; the safetensors header metadata holds
one JSON document (constructor kwargs of G and D, where the weights came from, the facebatch
version), so the architecture always travels with the weights, as NVlabs' init_kwargs do, but no
code does. Written by `facebatch models convert` and by stages that produce generators (NADA).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from facebatch import __version__
from facebatch.errors import CheckpointError
from facebatch.nets.safetensors_meta import META_KEY, metadata_keys, read_file
from facebatch.pipeline.atomic import atomic_output

FORMAT_NAME = "facebatch-stylegan2"
FORMAT_VERSION = 1
__all__ = ["META_KEY", "RawNetworks", "read_native", "write_native"]


@dataclass
class RawNetworks:
    """Constructor kwargs and official-name state dicts, before any module is built."""

    g_kwargs: dict
    g_state: dict[str, torch.Tensor]
    d_kwargs: dict | None = None
    d_state: dict[str, torch.Tensor] | None = None
    extra: dict = field(default_factory=dict)


def write_native(
    path: Path,
    g_kwargs: dict,
    g_state: dict,
    d_kwargs: dict | None = None,
    d_state: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write atomically; `extra` (e.g. source file and sha256, NADA settings) is kept in the config."""
    if (d_kwargs is None) != (d_state is None):
        raise ValueError("pass both D kwargs and D state dict, or neither")
    tensors = {f"G.{k}": v.detach().to("cpu").contiguous().clone() for k, v in g_state.items()}
    if d_state is not None:
        tensors.update({f"D.{k}": v.detach().to("cpu").contiguous().clone() for k, v in d_state.items()})
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "facebatch_version": __version__,
        "G_init_kwargs": g_kwargs,
        "D_init_kwargs": d_kwargs,
        "extra": extra or {},
    }
    path = Path(path)
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(config, sort_keys=True, default=str)})
    return path


def read_native(path: Path) -> RawNetworks:
    config, tensors = read_file(path, "checkpoint")
    if config is None:
        raise CheckpointError(
            f"{path}: a safetensors file without a facebatch config (its metadata has "
            f"{metadata_keys(path) or 'nothing'}); facebatch cannot tell the architecture"
        )
    if config.get("format") != FORMAT_NAME or int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format {config.get('format')!r} v{config.get('format_version')} is not one this "
            f"facebatch {__version__} reads ({FORMAT_NAME} v{FORMAT_VERSION})"
        )
    g_state = {k[2:]: v for k, v in tensors.items() if k.startswith("G.")}
    d_state = {k[2:]: v for k, v in tensors.items() if k.startswith("D.")}
    if not g_state or not isinstance(config.get("G_init_kwargs"), dict):
        raise CheckpointError(f"{path}: no generator in this facebatch checkpoint")
    d_kwargs = config.get("D_init_kwargs")
    return RawNetworks(
        config["G_init_kwargs"],
        g_state,
        d_kwargs if d_state else None,
        d_state or None,
        extra=config.get("extra") or {},
    )
