"""`facebatch project DIR`: every image in a folder -> W+ latent + reconstruction scores, sharded on Dask, resumable."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from facebatch.cli.cluster_options import batch_command, report_run
from facebatch.cli.console import err, out
from facebatch.cli.projection_options import EncoderOption, GeneratorOption, PresetOption, SetOption, StepsOption


@batch_command
def project(
    input_dir: Annotated[
        str,
        typer.Argument(
            metavar="INPUT_DIR",
            help="Folder of images (searched recursively), one image file, or a URL (s3://bucket/photos).",
        ),
    ],
    generator: GeneratorOption,
    out_dir: Annotated[
        str, typer.Option("--out", "-o", help="Output folder or URL: latents/ parts, _run.json, _SUCCESS.")
    ],
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
    *,
    run,
) -> None:
    """Project every image under DIR into the generator: OUT/latents/part-*.parquet with W+ codes and scores.

    Shards run on Dask workers that each load the model once. Rerunning the same command resumes
    (finished shards are skipped); other settings in the same OUT are refused unless --overwrite.
    Read the result with pandas.read_parquet(OUT/"latents") or facebatch.read_latents(OUT).
    """
    from facebatch.commands.project import ProjectOptions
    from facebatch.commands.project import project as project_images_in
    from facebatch.pipeline.cluster import describe

    options = ProjectOptions(
        preset=preset,
        steps=steps,
        overrides=tuple(set_ or ()),
        batch_size=batch_size,
        seed=seed,
        shard_size=shard_size,
        encoder=encoder,
        align=align_backend if align else None,
        save_reconstructions=save_reconstructions,
        save_noise=save_noise,
    )
    result = project_images_in(input_dir, generator, out_dir, options, run, console=err)
    if run.dry_run:
        out.print(_plan_table(input_dir, result, describe(run.cluster()), run.overwrite))
        return
    report_run(result.summary, run.quiet)


def _plan_table(input_dir, result, where: str, overwrite: bool) -> Table:
    spec, nets, cfg, summary = result.spec, result.nets, result.config, result.summary
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
    table.add_row("seed", str(spec.config.seed))
    table.add_row("batch size", str(spec.runtime.batch_size or "auto (per worker device and resolution)"))
    table.add_row("runs on", where)
    extras = [
        name
        for name, on in (
            ("reconstructions", spec.config.save_reconstructions),
            ("noise maps", spec.config.save_noise),
            (f"aligned with {spec.config.align}", spec.config.align),
        )
        if on
    ]
    table.add_row("also writes", ", ".join(extras) or "-")
    return table
