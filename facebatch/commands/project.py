"""`project`: every image under a folder -> W+ latent + reconstruction scores, sharded on Dask, resumable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.run_options import BatchResult, RunOptions, run_batch


@dataclass(frozen=True)
class ProjectOptions:
    preset: str | None = None  # a preset name or YAML file (None: the generator's default preset)
    steps: int | None = None  # overrides the preset's optimisation steps
    overrides: Sequence[str] = ()  # key=value preset settings (--set)
    batch_size: int | None = None  # images optimised together on a worker (None: by device and resolution)
    seed: int = 0  # run seed; each image's seed derives from it and its image_id
    shard_size: int = 256  # images per shard (= per Parquet part; the unit of resume)
    encoder: str | None = None  # for presets that start from an encoder (None: the generator's own)
    align: str | None = None  # a landmark backend to FFHQ-align faces with (None: centre crop)
    save_reconstructions: bool = False
    save_noise: bool = False


@dataclass
class ProjectResult(BatchResult):
    nets: object  # Networks
    config: object  # ProjectionConfig


def project(
    input_dir: str | Path,
    generator: str | Path,
    out: str | Path,
    options: ProjectOptions = ProjectOptions(),
    run: RunOptions = RunOptions(),
    console=None,
) -> ProjectResult:
    """Project every image under `input_dir` into `generator`: OUT/latents/part-*.parquet with W+ codes and
    scores. Everything a worker would fail on (settings, generator, perceptual weights, encoder, landmark
    backend) is checked here first, once. With `run.dry_run` nothing runs: the result's summary is the plan."""
    from facebatch.invert.presets import projection_config
    from facebatch.nets.checkpoints import load_networks
    from facebatch.nets.perceptual import build_perceptual
    from facebatch.pipeline.discover import discover_images, no_images
    from facebatch.stages.project import build_project_spec

    o = options
    if o.batch_size is not None and o.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    run.configure_storage()
    input_dir, out = storage.location(input_dir, "input"), storage.location(out, "output")
    run.cluster()  # a bad cluster combination is one line before anything is read
    cfg = projection_config(o.preset, o.steps, o.overrides)  # the settings are checked before any file is read
    if o.align is not None:
        check_align_available(o.align)
    items = discover_images(input_dir, exclude=[out])
    if not items:
        raise no_images(input_dir)
    nets = load_networks(generator, device="cpu")  # here only for its sha256 and shapes; fails early on a bad file
    if o.preset is None:
        cfg = projection_config(o.preset, o.steps, o.overrides, nets)  # the generator's own default preset
    if o.save_noise and cfg.noise_optimization == "none":
        raise InputError(f"--save-noise: preset {cfg.name!r} does not optimise noise maps (noise_optimization=none)")
    build_perceptual(cfg.perceptual, "cpu")  # a missing perceptual weight file fails here, not on every worker
    enc = projection_encoder(cfg, o.encoder, nets)  # likewise a missing encoder, or one for another generator
    spec = build_project_spec(
        items=items,
        out_dir=out,
        nets=nets,
        projection=cfg,
        seed=o.seed,
        shard_size=o.shard_size,
        batch_size=o.batch_size,
        align=o.align,
        save_reconstructions=o.save_reconstructions,
        save_noise=o.save_noise,
        encoder=enc,
    )
    return ProjectResult(run_batch(spec, run, console), spec, nets, cfg)


def projection_encoder(cfg, encoder: str | None, nets):
    """The encoder a projection uses: the one named, else the generator's own when the preset starts from an
    encoder; None when neither applies. One line for a missing one or one trained for another generator."""
    from facebatch.encoder.api import load_encoder

    if encoder is None and cfg.init != "encoder":
        return None
    return load_encoder(encoder, generator=nets)


def check_align_available(backend: str) -> None:
    """Fail before planning when the landmark backend (package or model file) is missing, not once per image."""
    try:
        from facebatch.alignment import api
    except ImportError as exc:
        raise InputError(f"--align is not available in this install ({exc}); install facebatch[align]") from None
    api.check_backend(backend)
