"""`facebatch align IN OUT`: FFHQ-aligned crops of every face in a folder, sharded on Dask, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from facebatch.cli.cluster_options import batch_command, report_run
from facebatch.cli.console import err, out


@batch_command(without=("workers", "threads_per_worker", "device"))
def align(
    input_dir: Annotated[
        str, typer.Argument(metavar="INPUT_DIR", help="Folder of images (searched recursively) or one image file.")
    ],
    out_dir: Annotated[
        str, typer.Argument(metavar="OUT_DIR", help="Output folder: aligned/ PNGs, faces/ Parquet parts, _run.json.")
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
    *,
    run,
) -> None:
    """Align every face under IN the way FFHQ was made: OUT/aligned/*.png and OUT/faces/part-*.parquet.

    One row per aligned face (image_id, face_index, box, score, 68 landmarks, crop quad in source
    pixels, aligned_path); an image without a face is an error row. Rerunning the same command resumes;
    other settings in the same OUT are refused unless --overwrite. Read the table with
    pandas.read_parquet(OUT/"faces") or facebatch.read_latents(OUT/"faces").
    """
    from facebatch.commands.align import AlignOptions, align_run_options
    from facebatch.commands.align import align as align_faces
    from facebatch.pipeline.cluster import describe

    run = run.with_(workers=workers)
    options = AlignOptions(size=size, backend=backend, faces=faces, min_score=min_score, shard_size=shard_size)
    result = align_faces(input_dir, out_dir, options, run, console=err)
    if run.dry_run:
        where = describe(align_run_options(run).cluster())
        out.print(_plan_table(input_dir, result.spec, result.summary, where, run.overwrite))
        return
    report_run(result.summary, run.quiet)


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
        f"FFHQ recipe, {cfg.size} px, {cfg.faces} face(s), {cfg.backend} landmarks, "
        f"detection score >= {cfg.min_score:g}",
    )
    table.add_row("runs on", where)
    return table
