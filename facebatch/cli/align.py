"""`facebatch align IN OUT`: FFHQ-aligned crops of every face in a folder, sharded on Dask, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from facebatch.cli.cluster_options import (
    DryRunOption,
    OverwriteOption,
    QuietOption,
    RetryErrorsOption,
    SchedulerFileOption,
    SchedulerOption,
    cluster_options,
    report_run,
    run_shards,
)
from facebatch.cli.console import out


def align(
    input_dir: Annotated[
        Path, typer.Argument(metavar="INPUT_DIR", help="Folder of images (searched recursively) or one image file.")
    ],
    out_dir: Annotated[
        Path, typer.Argument(metavar="OUT_DIR", help="Output folder: aligned/ PNGs, faces/ Parquet parts, _run.json.")
    ],
    size: Annotated[
        int, typer.Option("--size", "-s", help="Side of the aligned square in pixels (FFHQ: 1024).")
    ] = 1024,
    backend: Annotated[str, typer.Option("--backend", help="Landmark backend: dlib | face-alignment.")] = "dlib",
    faces: Annotated[
        str, typer.Option("--faces", help="largest: one face per image; all: every face found.")
    ] = "largest",
    min_score: Annotated[
        Optional[float],
        typer.Option("--min-score", help="Detection score threshold (default: the backend's; dlib 0.3)."),
    ] = None,
    shard_size: Annotated[
        int, typer.Option("--shard-size", help="Images per shard (= per Parquet part; the unit of resume).")
    ] = 256,
    # Its own help: landmarks and warps are single-threaded, so each worker gets one thread (same default rule).
    workers: Annotated[
        Optional[int],
        typer.Option(
            "--workers",
            "-w",
            help="Local worker processes of one thread each; 0 = in this process, no Dask. Default: this process "
            "below 8 usable cores, else one per core (`facebatch info` shows the rule).",
        ),
    ] = None,
    scheduler: SchedulerOption = None,
    scheduler_file: SchedulerFileOption = None,
    overwrite: OverwriteOption = False,
    retry_errors: RetryErrorsOption = False,
    dry_run: DryRunOption = False,
    quiet: QuietOption = False,
) -> None:
    """Align every face under IN the way FFHQ was made: OUT/aligned/*.png and OUT/faces/part-*.parquet.

    One row per aligned face (image_id, face_index, box, score, 68 landmarks, crop quad in source
    pixels, aligned_path); an image without a face is an error row. Rerunning the same command resumes;
    other settings in the same OUT are refused unless --overwrite. Read the table with
    pandas.read_parquet(OUT/"faces") or facebatch.read_latents(OUT/"faces").
    """
    from facebatch.pipeline.cluster import describe
    from facebatch.pipeline.discover import discover_images, no_images
    from facebatch.stages.align import build_align_spec

    remote = bool(scheduler or scheduler_file)
    # dlib's detector is single-threaded: one thread per worker, so a large host gets one worker per core.
    threads = None if remote else 1
    cluster = cluster_options(workers, scheduler, scheduler_file, threads_per_worker=threads, device="cpu")
    items = discover_images(input_dir, exclude=[out_dir])
    if not items:
        raise no_images(input_dir)
    spec = build_align_spec(
        items=items,
        out_dir=out_dir,
        size=size,
        backend=backend,
        faces=faces,
        min_score=min_score,
        shard_size=shard_size,
    )
    summary = run_shards(spec, cluster, overwrite, retry_errors, dry_run, quiet)
    if dry_run:
        out.print(_plan_table(input_dir, spec, summary, describe(cluster), overwrite))
        return
    report_run(summary, quiet)


def _plan_table(input_dir: Path, spec, summary, where: str, overwrite: bool) -> Table:
    cfg = spec.config
    table = Table(title=f"plan: align {input_dir} -> {spec.out_dir}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("images", f"{summary.images} in {summary.shards} shards of {spec.shard_size}")
    table.add_row(
        "resume",
        "--overwrite: everything is recomputed"
        if overwrite
        else f"{summary.shards_skipped} shards done ({summary.images_skipped} images), skipped",
    )
    table.add_row("to compute", f"{summary.shards_run} shards, {summary.images_todo} images")
    table.add_row(
        "alignment",
        f"FFHQ recipe, {cfg['size']} px, {cfg['faces']} face(s), {cfg['backend']} landmarks, "
        f"detection score >= {cfg['min_score']:g}",
    )
    table.add_row("runs on", where)
    return table
