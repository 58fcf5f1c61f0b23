"""`facebatch project DIR`: every image in a folder -> W+ latent + reconstruction scores, sharded on Dask, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from facebatch.cli.cluster_options import (
    DeviceOption,
    DryRunOption,
    OverwriteOption,
    QuietOption,
    RetryErrorsOption,
    SchedulerFileOption,
    SchedulerOption,
    ThreadsPerWorkerOption,
    WorkersOption,
    cluster_options,
    report_run,
    run_shards,
)
from facebatch.cli.console import out
from facebatch.cli.projection_options import (
    EncoderOption,
    GeneratorOption,
    PresetOption,
    SetOption,
    StepsOption,
    projection_config,
    projection_encoder,
)
from facebatch.errors import InputError


def project(
    input_dir: Annotated[
        Path, typer.Argument(metavar="INPUT_DIR", help="Folder of images (searched recursively) or one image file.")
    ],
    generator: GeneratorOption,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder: latents/ parts, _run.json, _SUCCESS.")],
    preset: PresetOption = None,
    steps: StepsOption = None,
    set_: SetOption = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            "-b",
            help="Images optimised together on a worker (default: GPU 64 up to 128 px, 16 at 256 px, else 8; "
            "CPU 8 up to 128 px, 4 at 256 px, else 1).",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Run seed; each image's seed derives from it and its image_id.")
    ] = 0,
    shard_size: Annotated[
        int, typer.Option("--shard-size", help="Images per shard (= per Parquet part; the unit of resume).")
    ] = 256,
    workers: WorkersOption = None,
    scheduler: SchedulerOption = None,
    scheduler_file: SchedulerFileOption = None,
    threads_per_worker: ThreadsPerWorkerOption = None,
    device: DeviceOption = "auto",
    encoder: EncoderOption = None,
    align: Annotated[
        bool, typer.Option("--align", help="FFHQ-align faces (landmarks) instead of a centre crop.")
    ] = False,
    align_backend: Annotated[str, typer.Option("--align-backend", help="Landmark backend for --align.")] = "dlib",
    save_reconstructions: Annotated[
        bool, typer.Option("--save-reconstructions", help="Write OUT/reconstructions/<image_id>.png.")
    ] = False,
    save_noise: Annotated[
        bool, typer.Option("--save-noise", help="Write optimised noise maps to OUT/noise/part-NNNNN.npz (large).")
    ] = False,
    overwrite: OverwriteOption = False,
    retry_errors: RetryErrorsOption = False,
    dry_run: DryRunOption = False,
    quiet: QuietOption = False,
) -> None:
    """Project every image under DIR into the generator: OUT/latents/part-*.parquet with W+ codes and scores.

    Shards run on Dask workers that each load the model once. Rerunning the same command resumes
    (finished shards are skipped); other settings in the same OUT are refused unless --overwrite.
    Read the result with pandas.read_parquet(OUT/"latents") or facebatch.read_latents(OUT).
    """
    from facebatch.nets.checkpoints import load_networks
    from facebatch.nets.perceptual import build_perceptual
    from facebatch.pipeline.cluster import describe
    from facebatch.pipeline.discover import discover_images, no_images
    from facebatch.stages.project import build_project_spec

    if batch_size is not None and batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    cluster = cluster_options(workers, scheduler, scheduler_file, threads_per_worker, device)
    cfg = projection_config(preset, steps, set_)  # the settings are checked before any file is read
    if align:
        _check_align_available(align_backend)
    items = discover_images(input_dir, exclude=[out_dir])
    if not items:
        raise no_images(input_dir)
    nets = load_networks(generator, device="cpu")  # here only for its sha256 and shapes; fails early on a bad file
    if preset is None:
        cfg = projection_config(preset, steps, set_, nets)  # the generator's own default preset
    if save_noise and cfg.noise_optimization == "none":
        raise InputError(f"--save-noise: preset {cfg.name!r} does not optimise noise maps (noise_optimization=none)")
    build_perceptual(cfg.perceptual, "cpu")  # a missing perceptual weight file fails here, not on every worker
    enc = projection_encoder(cfg, encoder, nets)  # likewise a missing encoder, or one for another generator
    spec = build_project_spec(
        items=items,
        out_dir=out_dir,
        nets=nets,
        projection=cfg.to_dict(),
        seed=seed,
        shard_size=shard_size,
        batch_size=batch_size,
        align=align_backend if align else None,
        save_reconstructions=save_reconstructions,
        save_noise=save_noise,
        encoder=enc,
    )
    summary = run_shards(spec, cluster, overwrite, retry_errors, dry_run, quiet)
    if dry_run:
        out.print(_plan_table(input_dir, spec, nets, cfg, summary, describe(cluster), overwrite))
        return
    report_run(summary, quiet)


def _check_align_available(backend: str) -> None:
    """Fail before planning when the landmark backend (package or model file) is missing, not once per image."""
    try:
        from facebatch.align import api
    except ImportError as exc:
        raise InputError(f"--align is not available in this install ({exc}); install facebatch[align]") from None
    api.check_backend(backend)


def _plan_table(input_dir, spec, nets, cfg, summary, where: str, overwrite: bool) -> Table:
    table = Table(title=f"plan: project {input_dir} -> {spec.out_dir}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("images", f"{summary.images} in {summary.shards} shards of {spec.shard_size}")
    done = (
        "--overwrite: everything is recomputed"
        if overwrite
        else f"{summary.shards_skipped} shards done ({summary.images_skipped} images), skipped"
    )
    table.add_row("resume", done)
    table.add_row("to compute", f"{summary.shards_run} shards, {summary.images_todo} images")
    table.add_row("generator", f"{nets.name} ({nets.format}, {nets.G.img_resolution} px, sha256 {nets.sha256[:16]}...)")
    table.add_row(
        "projection",
        f"preset {cfg.name}: {cfg.latent_space}, {cfg.total_steps} steps, perceptual {cfg.perceptual}, "
        f"noise {cfg.noise_optimization}",
    )
    table.add_row("seed", str(spec.config["seed"]))
    table.add_row("batch size", str(spec.runtime["batch_size"] or "auto (per worker device and resolution)"))
    table.add_row("runs on", where)
    extras = [
        name
        for name, on in (
            ("reconstructions", spec.config["save_reconstructions"]),
            ("noise maps", spec.config["save_noise"]),
            (f"aligned with {spec.config['align']}", spec.config["align"]),
        )
        if on
    ]
    table.add_row("also writes", ", ".join(extras) or "-")
    return table
