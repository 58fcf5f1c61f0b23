"""The encoder as library calls: train one for a generator, load one, encode images.

`facebatch encoder train` is `train_encoder_file`; `facebatch.load_encoder` / `facebatch.encode` are
`load_encoder` / `encode`; the projector's `--init encoder` finds a generator's own encoder with
`encoder_for`.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from facebatch import checks
from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.ownership import record_written
from facebatch.pipeline.rundir import folder_lock
from facebatch.pipeline.snapshots import claim_trained_output
from facebatch.ranges import whole_number

if TYPE_CHECKING:
    from facebatch.encoder.train import EncoderResult
    from facebatch.nets.encoder import EncoderFile

RECIPE = "facebatch/encoder/train.py"


def default_work_dir(out: Path) -> Path:
    """enc.safetensors -> enc.encoder-work/ beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.encoder-work")


def load_real_images(folder: str | Path, resolution: int, limit: int | None = None) -> tuple[torch.Tensor, int]:
    """uint8 [N, 3, R, R] of the images under `folder`, read as `facebatch project` reads them (centre square,
    Lanczos), sorted by path; files that cannot be read are skipped and counted."""
    from facebatch.pipeline.discover import discover_images, not_a_folder
    from facebatch.pipeline.images import load_image

    folder = Path(folder)
    if not folder.is_dir():
        raise not_a_folder(folder, "folder of real images (--real)")
    items = discover_images(folder)[:limit]
    images, skipped = [], 0
    for item in items:
        try:
            x, _ = load_image(item["path"], resolution)
        except Exception:  # a broken file is one fewer training image, not a failed run
            skipped += 1
            continue
        images.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    if not images:
        raise InputError(f"--real {folder}: no readable images")
    return torch.stack(images), skipped


def train_encoder_file(
    generator,
    *,
    out: str | Path,
    real: str | Path | None = None,
    real_limit: int | None = 20000,
    work: str | Path | None = None,
    device: str = "auto",
    overwrite: bool = False,
    on_step: Callable[[int, dict], None] | None = None,
    stop_after: int | None = None,
    half: bool = False,
    **settings,
) -> "EncoderResult":
    """Train (or resume) an encoder for `generator` (registry name, path or loaded `Networks`) and write it to
    `out` once `iters` steps are done; `settings` are `EncoderSettings` fields (iters, batch, lr, seed, ...).

    `real` adds a folder of real images (image losses only); snapshots go to `work` (default OUT's name +
    ``.encoder-work/``) and a rerun resumes from the newest one. `half` stores the weights as float16.
    """
    from facebatch.encoder.train import EncoderSettings, train_encoder
    from facebatch.nets.checkpoints import load_networks
    from facebatch.nets.device import resolve_device
    from facebatch.nets.encoder import write_encoder

    checks.a_generator(generator)
    out = checks.a_local_path(out, "--out", checks.TRAINED_LOCALLY)
    work = None if work is None else checks.a_local_path(work, "--work", checks.TRAINED_LOCALLY)
    real = None if real is None else checks.a_local_path(real, "--real", "the real images are read from local disk")
    if real_limit is not None:
        whole_number(real_limit, "--real-limit", lo=1)
    checks.known_options(settings, [f.name for f in fields(EncoderSettings)], "train_encoder")
    if settings.get("widths") is not None:
        widths = checks.items(settings["widths"], "widths", "channel widths")
        settings["widths"] = tuple(whole_number(w, "widths", lo=1) for w in widths)
    s = EncoderSettings(**settings)
    s.check()  # numbers first: before any network or image is loaded
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give the encoder file to write (e.g. celeba64-encoder.safetensors)")
    work_dir = Path(work) if work is not None else default_work_dir(out)
    claim_trained_output(out, work_dir, overwrite)
    dev = resolve_device(device)
    nets = generator if hasattr(generator, "G") else load_networks(generator, device="cpu", with_d=False)
    images, skipped = (None, 0)
    if real is not None:
        images, skipped = load_real_images(real, nets.G.img_resolution, real_limit)
    real_info = None
    if images is not None:
        real_info = {"folder": str(Path(real).resolve()), "images": len(images), "skipped": skipped}
    run_key = {**s.resume_key(), "generator_sha256": nets.sha256, "real": real_info}
    with folder_lock(work_dir):  # a second run on this work folder would train over the same snapshots
        result = train_encoder(
            nets.G, s, work_dir, run_key=run_key, real=images, device=dev, overwrite=overwrite, on_step=on_step,
            stop_after=stop_after,
        )  # fmt: skip
        if result.iteration == s.iters:
            recipe = {"script": RECIPE, "settings": s.resume_key() | {"iters": s.iters}, "real": real_info}
            recipe["final_losses"] = _mean_of_last(result.losses, 50)
            claim_trained_output(out, work_dir, overwrite)  # again: another run may have written it meanwhile
            write_encoder(out, result.encoder, nets.sha256, result.images_seen, recipe, half=half)
            record_written([out], by=work_dir)
    return result


def _mean_of_last(losses: Sequence[dict], n: int) -> dict:
    tail = list(losses[-n:])
    keys = sorted({k for r in tail for k in r})
    return {k: float(np.mean([r[k] for r in tail if k in r])) for k in keys}


def encoder_for(nets) -> str | None:
    """The registry name of the encoder trained for this generator (matched by its sha256), if any."""
    from facebatch.nets import registry

    entry = registry.encoder_of(nets.sha256)
    return entry.name if entry is not None else None


def load_encoder(spec: str | Path | None = None, generator=None, device: str = "cpu") -> "EncoderFile":
    """An encoder by registry name or path; with `generator` (loaded `Networks`), spec may be None (its own
    encoder), and an encoder trained for another generator is refused in one line."""
    from facebatch.nets import registry
    from facebatch.nets.encoder import check_encoder_fits, read_encoder

    if spec is not None:
        spec = checks.a_path(spec, "spec", "a registry name or a path")
    if generator is not None and not hasattr(generator, "G"):
        raise InputError(f"generator: expected what load_generator returns, got {checks.what_it_is(generator)}")
    if spec is None:
        spec = encoder_for(generator) if generator is not None else None
        if spec is None:
            raise InputError(
                "this generator has no built-in encoder: pass --encoder PATH (train one with "
                "`facebatch encoder train -g GENERATOR -o ENC.safetensors`)"
            )
    entry = registry.get(str(spec)) if not Path(str(spec)).exists() else None
    if entry is not None:
        if entry.kind != "encoder":
            raise InputError(f"{spec} is a {entry.kind} in the registry, not an encoder")
        path = entry.fetch()
    else:
        path = spec if storage.is_url(spec) else Path(spec)
    enc = read_encoder(path, device=device)
    if generator is not None:
        check_encoder_fits(enc, generator.sha256, generator.G)
    return enc


@torch.no_grad()
def encode(images, encoder: "EncoderFile", *, batch_size: int = 64) -> np.ndarray:
    """W+ codes [N, num_ws, w_dim] of images: file paths (read as `project` reads them) or a [N, 3, R, R]
    tensor in [-1, 1] at the encoder's resolution."""
    from facebatch.nets.encoder import EncoderFile

    E = checks.an_instance(encoder, EncoderFile, "encoder", "what load_encoder returns").encoder
    whole_number(batch_size, "batch_size", lo=1)
    if isinstance(images, torch.Tensor):
        x = images
    else:
        files = checks.paths(images, "images")
        x = torch.stack([_read_image(p, E.resolution) for p in files]) if files else torch.empty(0)
    if x.ndim != 4 or tuple(x.shape[1:]) != (3, E.resolution, E.resolution) or not len(x):
        raise InputError(f"images must be [N, 3, {E.resolution}, {E.resolution}] with N >= 1, got {list(x.shape)}")
    device = E.w_avg.device
    out = [E(x[i : i + batch_size].to(device, torch.float32)).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy().astype(np.float32)


def _read_image(path: Path, resolution: int) -> torch.Tensor:
    """One image as `project` reads it; a file that is not one is an InputError naming it."""
    from facebatch.pipeline.images import UnreadableImage, load_image

    try:
        return load_image(path, resolution)[0]
    except UnreadableImage as exc:
        raise InputError(f"{path}: {exc}") from None
