"""`load_networks(spec)`: any supported checkpoint -> our StyleGAN2 G (and D when the file has one).

The format is read from the file's first bytes, never from its extension (people rename files):
safetensors header -> our native format; zip -> torch.save, read with torch's weights-only
unpickler (rosinality or the NVlabs state-dict export); a raw pickle -> the state-only unpickler
for official NVlabs pickles, or torch.load for a pre-1.6 torch.save file. No path runs code from
the file. `spec` may also be a registry name (downloaded to the cache) or an http(s) URL.
"""

from __future__ import annotations

import argparse
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from facebatch.errors import CheckpointError, InputError, first_line, weights_only_refusal
from facebatch.nets import cache, registry
from facebatch.nets.arch_check import check_finite, check_kwargs, check_shapes
from facebatch.nets.native_format import RawNetworks, read_native
from facebatch.nets.safe_pickle import TORCH_LEGACY_MAGIC, load_pickle, networks_from_pickle
from facebatch.pipeline import storage


@dataclass
class Networks:
    """Ready-to-run networks (eval mode, no grads) and where they came from."""

    G: torch.nn.Module
    D: torch.nn.Module | None
    sha256: str
    path: Path
    format: str
    name: str
    g_kwargs: dict
    d_kwargs: dict | None = None
    source: str | None = None  # the URL it was fetched from (an object store), else None: `path` is the file

    @property
    def location(self) -> str:
        """What a worker loads it from: the object-store URL (each host fetches its own copy), else the file's
        absolute path."""
        return self.source or str(Path(self.path).resolve())

    @torch.no_grad()
    def mapping(self, z, truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> torch.Tensor:
        """W+ codes [N, num_ws, w_dim] of latents z [N, z_dim] (a tensor or an array)."""
        z = torch.as_tensor(np.asarray(z, dtype=np.float32) if not isinstance(z, torch.Tensor) else z)
        if z.ndim != 2 or z.shape[1] != self.G.z_dim:
            raise InputError(f"z must be [N, {self.G.z_dim}], got {list(z.shape)}")
        device = next(self.G.parameters()).device
        return self.G.mapping(z.to(device), truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

    @torch.no_grad()
    def render(self, ws, noise=None) -> torch.Tensor:
        """Images [N, 3, R, R] in [-1, 1] of W+ codes [N, num_ws, w_dim] (e.g. `read_latents(run).latent("w")`).
        `noise`: one map [N, 1, r, r] per noise layer (a project run's saved noise), or None for the
        constant noise every command renders with."""
        ws = torch.as_tensor(np.asarray(ws, dtype=np.float32) if not isinstance(ws, torch.Tensor) else ws)
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (self.G.num_ws, self.G.w_dim):
            raise InputError(f"ws must be [N, {self.G.num_ws}, {self.G.w_dim}], got {list(ws.shape)}")
        device = next(self.G.parameters()).device
        if noise is None:
            return self.G.synthesis(ws.to(device), noise_mode="const").cpu()
        maps = [torch.as_tensor(np.asarray(n, dtype=np.float32)).to(device) for n in noise]
        return self.G.synthesis(ws.to(device), noise=maps).cpu()

    def sample(self, seeds, truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> torch.Tensor:
        """Images [N, 3, R, R] in [-1, 1] for seeds, drawn as `facebatch sample` and NVlabs gen_images.py draw them
        (z = RandomState(seed).randn(z_dim), constant noise)."""
        from facebatch.nets.sampling import z_from_seeds
        from facebatch.ranges import check_seeds

        seeds = [seeds] if isinstance(seeds, int) else list(seeds)
        check_seeds(seeds, "seeds")
        return self.render(self.mapping(z_from_seeds(seeds, self.G.z_dim), truncation_psi, truncation_cutoff))

    def require_d(self, purpose: str) -> torch.nn.Module:
        if self.D is None:
            raise CheckpointError(
                f"{purpose} needs a discriminator; {self.path} has none (rosinality exports often drop it)"
            )
        return self.D


def sniff(path: Path) -> str:
    """'safetensors' | 'zip' | 'pickle' from the first bytes; anything else is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        what = f"is {_special_kind(path)}, not a checkpoint file" if path.exists() and not path.is_dir() else None
        raise CheckpointError(f"{path} {what}" if what else f"no such checkpoint file: {path}")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) == 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len <= size - 8:
            return "safetensors"
        if header_len < 1 << 27:  # a plausible header length that runs past the end of the file
            raise CheckpointError(
                f"{path}: truncated safetensors file (header says {header_len} bytes, file has {size})"
            )
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    what = "an empty file" if size == 0 else f"{size} bytes starting {head[:8].hex()}"
    raise CheckpointError(
        f"{path} is not a checkpoint facebatch can read ({what}); expected an NVlabs .pkl, a "
        "rosinality .pt, an NVlabs state-dict export or a facebatch .safetensors"
    )


def read_checkpoint(path: Path) -> tuple[str, RawNetworks]:
    """(format name, kwargs + state dicts) without building modules.

    Everything the readers rebuild is untrusted data: a wrong type anywhere is a CheckpointError, never a traceback.
    """
    path = Path(path)
    try:
        return _read_checkpoint(path)
    except (CheckpointError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - no code from the file ran; a value of the wrong shape or type did
        raise CheckpointError(f"{path}: malformed checkpoint ({first_line(exc, with_type=True)})") from None


def _read_checkpoint(path: Path) -> tuple[str, RawNetworks]:
    kind = sniff(path)
    if kind == "safetensors":
        return "facebatch-safetensors", read_native(path)
    if kind == "pickle":
        obj = load_pickle(path)
        if not (isinstance(obj, int) and obj == TORCH_LEGACY_MAGIC):
            return "nvlabs-pickle", _wrap_errors(path, lambda: RawNetworks(*networks_from_pickle(obj)))
    return _from_torch_save(path)


def _wrap_errors(path: Path, fn):
    try:
        return fn()
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _from_torch_save(path: Path) -> tuple[str, RawNetworks]:
    try:
        # rosinality training checkpoints carry their argparse options; that class is data-only.
        # A file object, not the path: torch.load picks a loader by file extension, we go by the bytes.
        with torch.serialization.safe_globals([argparse.Namespace]), open(path, "rb") as fh:
            ckpt = torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refusal = weights_only_refusal(exc) or "refused to load: the file holds more than tensors and containers"
        raise CheckpointError(f"{path}: {refusal}") from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, KeyError) as exc:
        why = weights_only_refusal(exc) or f"truncated or corrupt torch checkpoint ({first_line(exc).split('. ')[0]})"
        raise CheckpointError(f"{path}: {why}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: a torch.save file holding a {type(ckpt).__name__}, not a checkpoint dict")
    if "g_ema" in ckpt:
        from facebatch.nets.rosinality import convert_rosinality

        return "rosinality", _wrap_errors(path, lambda: RawNetworks(*convert_rosinality(ckpt)))
    if "G_ema_state_dict" in ckpt and "G_init_kwargs" in ckpt:
        d_ok = ckpt.get("D_state_dict") is not None and ckpt.get("D_init_kwargs") is not None
        return "nvlabs-state-dict", RawNetworks(
            dict(ckpt["G_init_kwargs"]),
            dict(ckpt["G_ema_state_dict"]),
            dict(ckpt["D_init_kwargs"]) if d_ok else None,
            dict(ckpt["D_state_dict"]) if d_ok else None,
        )
    keys = sorted(map(str, ckpt))[:8]
    raise CheckpointError(
        f"{path}: a torch.save dict with keys {keys}; expected a rosinality checkpoint (g_ema) "
        "or an NVlabs state-dict export (G_init_kwargs, G_ema_state_dict)"
    )


def build(path: Path, kind: str, kwargs: dict, state: dict, cls: type) -> torch.nn.Module:
    """Check the stored config (types, bounds, then shapes on the meta device) and that every weight is finite,
    construct from it, load the state dict strictly, freeze for inference. Nothing is allocated beyond what
    the file holds."""
    try:
        check_kwargs(kind, kwargs)
        check_shapes(kind, cls, kwargs, state)
        check_finite(kind, state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the config is data from the file: any failure means a bad file
        why = first_line(exc, with_type=True)
        raise CheckpointError(f"{path}: cannot build the {kind} from its stored config ({why})") from None
    try:
        net = cls(**kwargs)
        net.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001 - shapes were checked; what is left is a bad value in the file
        why = first_line(exc, with_type=True)
        raise CheckpointError(f"{path}: its {kind} weights cannot be loaded ({why})") from None
    net.eval().requires_grad_(False)
    return net


def build_networks(path: Path, raw: RawNetworks) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    from facebatch.nets.stylegan2 import Discriminator, Generator

    G = build(path, "generator", raw.g_kwargs, raw.g_state, Generator)
    D = build(path, "discriminator", raw.d_kwargs, raw.d_state, Discriminator) if raw.d_state is not None else None
    return G, D


def resolve(spec: str | Path) -> tuple[Path, str]:
    """A file path, registry name or URL -> (local file, display name); fetches into the cache when needed."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return path, path.stem
    entry = registry.get(text)
    if entry is not None:
        return entry.fetch(), entry.name
    if text.startswith(("http://", "https://")):
        return cache.ensure_file(text, registry.url_cache_path(text)), Path(text).stem
    if storage.is_url(text):  # an object store: fetched into this host's cache once per version of the object
        return cache.fetch_object(text, registry.url_cache_path(text)), PurePosixPath(text).stem
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if path.exists():
        raise CheckpointError(f"{path} is {_special_kind(path)}, not a checkpoint file")
    if "/" in text or "\\" in text or path.suffix:
        raise CheckpointError(f"no such checkpoint file: {path}")
    known = ", ".join(sorted(registry.models()))
    raise CheckpointError(f"unknown model {text!r}: not a file and not a registry name (known: {known})")


def _special_kind(path: Path) -> str:
    import stat

    mode = path.stat().st_mode
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def verify_pinned(path: Path, name: str, digest: str) -> None:
    """A registry file in the cache must still match its pinned (or recorded) sha256."""
    entry = registry.get(name)
    if entry is None or Path(path) != entry.cache_path():
        return
    expected = entry.expected_sha256()
    if expected and expected != digest:
        raise CheckpointError(
            f"cached {name} at {path} has sha256 {digest}, expected {expected}; "
            f"delete it or run `facebatch models fetch {name} --force`"
        )


def load_networks(
    spec: str | Path, device: str | torch.device = "cpu", *, with_d: bool = True, expect_sha256: str | None = None
) -> Networks:
    """Load G (G_ema for NVlabs pickles) and D if present, ready for inference on `device`.

    `expect_sha256`: the file must hash to this (a worker host may hold another file at the same path).
    """
    path, name = resolve(spec)
    digest = cache.sha256_of(path)
    if expect_sha256 is not None and digest != expect_sha256:
        raise CheckpointError(f"{path} on this worker has sha256 {digest}, the run uses {expect_sha256}")
    verify_pinned(path, name, digest)
    kind, raw = read_checkpoint(path)
    if not with_d:
        raw.d_kwargs = raw.d_state = None
    G, D = build_networks(path, raw)
    return Networks(
        G=G.to(device),
        D=D.to(device) if D is not None else None,
        sha256=digest,
        path=path,
        format=kind,
        name=name,
        g_kwargs=raw.g_kwargs,
        d_kwargs=raw.d_kwargs,
        source=str(spec) if storage.is_url(spec) and not str(spec).startswith(("http://", "https://")) else None,
    )
