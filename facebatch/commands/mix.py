"""`mix APP`: Image2StyleGAN(++) morphs, crossovers, inpainting, local style transfer and expression transfer on
pairs of faces, through the shard runner (sharded, resumable, one manifest row per output)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.run_options import BatchResult, RunOptions, run_batch


@dataclass(frozen=True)
class MixOptions:
    """The settings every mix app shares (each app's own, e.g. morph's frames, are its `params`)."""

    generator: str | Path | None = None  # None: the --latents run's generator
    latents: Sequence[str | Path] = ()  # `project` runs whose image_ids the pairs may name
    preset: str | None = None  # projection preset (None: the generator's default)
    steps: int | None = None
    overrides: Sequence[str] = ()  # key=value preset settings (--set)
    seed: int = 0  # run seed; each pair's seed derives from it and its pair_id
    batch_size: int = 8  # pairs optimised together on a worker
    shard_size: int = 64  # pairs per shard (= per manifest part)
    sheet_rows: int = 16  # pairs shown in the contact sheet


@dataclass
class MixResult(BatchResult):
    nets: object  # Networks
    config: object  # ProjectionConfig
    sheet: Path | None  # OUT/contact_sheets/<app>.png, when a pair succeeded

    def manifest(self):
        """The manifest as a DataFrame: one row per output (the result codes: `read_latents(OUT / "manifest")`)."""
        from facebatch.stages.mix import read_manifest

        return read_manifest(self.out_dir)


def mix(
    app: str,
    pairs: str | Path,
    out: str | Path,
    params: Mapping[str, Any] | None = None,
    options: MixOptions = MixOptions(),
    run: RunOptions = RunOptions(),
    console=None,
) -> MixResult:
    """Run mix `app` on every pair of the `pairs` CSV into `out`: images, the manifest and a contact sheet."""
    from facebatch.invert.presets import projection_config
    from facebatch.nets.checkpoints import load_networks
    from facebatch.nets.perceptual import build_perceptual
    from facebatch.pipeline.latents import resolve_generator
    from facebatch.stages.mix import build_mix_spec, open_runs, write_contact_sheet

    o = options
    if not storage.location(pairs).is_file():
        raise InputError(f"no such pairs file: {pairs}")
    run.configure_storage()
    run.cluster()
    cfg = projection_config(o.preset, o.steps, o.overrides)
    latents = [storage.location(p) for p in o.latents]
    generator = o.generator
    if generator is None:
        if not latents:
            raise InputError("--generator is required (or --latents, whose run names its generator)")
        generator = str(resolve_generator(None, open_runs(latents).index)[0])
    nets = load_networks(generator, device="cpu", with_d=False)
    build_perceptual(cfg.perceptual, "cpu")  # a missing perceptual weight file fails here, not on every worker
    spec = build_mix_spec(
        app=app,
        pairs_csv=storage.location(pairs),
        out_dir=storage.location(out),
        nets=nets,
        projection=cfg,
        params=dict(params or {}),
        latents=latents,
        seed=o.seed,
        shard_size=o.shard_size,
        batch_size=o.batch_size,
    )
    summary = run_batch(spec, run, console)
    sheet = None
    if not run.dry_run and summary.images_ok:
        sheet = write_contact_sheet(storage.location(out), app, o.sheet_rows)
    return MixResult(summary, spec, nets, cfg, sheet)
