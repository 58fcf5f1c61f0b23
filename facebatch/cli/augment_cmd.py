"""`facebatch augment`: edited images of every latent along boundaries, sharded on Dask, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from facebatch.cli.boundaries_cmd import split_names
from facebatch.cli.console import err, out
from facebatch.errors import InputError, RunFailed

MAX_FAILURES_SHOWN = 5
DEFAULT_STRENGTHS = "-3,-1.5,1.5,3"
# Lets `--strengths -3 -1.5 1.5 3` work: click reads only "-3" as the option's value and would take
# "-1.5" for an unknown option; with these settings the rest arrive in ctx.args, in order.
CONTEXT = {"ignore_unknown_options": True, "allow_extra_args": True}


def parse_strengths(text: str, extra: list[str]) -> list[float]:
    values = []
    for token in [*text.split(","), *extra]:
        for part in token.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                values.append(float(part))
            except ValueError:
                raise InputError(f"unexpected argument {part!r} (strengths are numbers: --strengths -3 -1.5 1.5 3)") from None
    if not values:
        raise InputError("--strengths is empty")
    return values


def augment(
    ctx: typer.Context,
    latents: Annotated[Path, typer.Option("--latents", "-l", help="OUT of `facebatch project`/`sample` (or its latents/).")],
    boundaries: Annotated[Path, typer.Option("--boundaries", "-B", help="Boundaries file from fit-boundaries or directions.")],
    attr: Annotated[str, typer.Option("--attr", "-a", help="Boundary name(s) to edit along, comma-separated.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder: images/, manifest/, contact_sheets/.")],
    strengths: Annotated[str, typer.Option("--strengths", "-s", help="Signed-distance changes, e.g. -3 -1.5 1.5 3 (or -3,-1.5,1.5,3).")] = DEFAULT_STRENGTHS,
    condition: Annotated[Optional[str], typer.Option("--condition", "-c", help="Boundaries to hold fixed, comma-separated.")] = None,
    layers: Annotated[Optional[str], typer.Option("--layers", help="W+ layers the edit may move, e.g. 0-7 (default: the boundary's).")] = None,
    mode: Annotated[str, typer.Option("--mode", help="relative: distance += s | absolute: distance = s.")] = "relative",
    generator: Annotated[Optional[str], typer.Option("--generator", "-g", help="Checkpoint (default: the one the latents' run used).")] = None,
    noise: Annotated[str, typer.Option("--noise", help="auto (saved noise maps when the project run kept them) | saved | const.")] = "auto",
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N ok latents (a preview).")] = None,
    sheet_rows: Annotated[int, typer.Option("--sheet-rows", help="Source images per contact sheet.")] = 16,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images rendered together on a worker.")] = 8,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Edited images per shard (= per manifest part).")] = 256,
    workers: Annotated[Optional[int], typer.Option("--workers", "-w", help="Local worker processes; 0 = no Dask, in this process.")] = None,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", envvar="DASK_SCHEDULER_ADDRESS", help="Use a running Dask cluster.")] = None,
    scheduler_file: Annotated[Optional[Path], typer.Option("--scheduler-file", help="Use a running Dask cluster by its scheduler file.")] = None,
    threads_per_worker: Annotated[Optional[int], typer.Option("--threads-per-worker", help="Torch threads per local worker.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")] = "auto",
    column: Annotated[str, typer.Option("--column", help="Latent column of the table.")] = "w",
    force: Annotated[bool, typer.Option("--force", help="Edit even if latents, boundaries and generator sha256 differ.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete this stage's earlier outputs in OUT and start again.")] = False,
    retry_errors: Annotated[bool, typer.Option("--retry-errors", help="Also redo rows that ended with status 'error'.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")] = False,
) -> None:
    """Render every ok latent moved along each --attr by each strength: PNGs, a manifest, contact sheets.

    A strength is a change of the boundary's signed distance (SVM units, as InterFaceGAN): the
    edited latent's distance is the original's + s (--mode relative) or exactly s (absolute),
    also with --condition (those boundaries' distances do not move) and --layers.
    """
    from facebatch.edit.augment import build_spec
    from facebatch.edit.latents_io import read_index
    from facebatch.edit.sheet import write_contact_sheets
    from facebatch.pipeline.cluster import ClusterOptions
    from facebatch.pipeline.runner import run_stage
    from facebatch.pipeline.summary import summary_table

    values = parse_strengths(strengths, list(ctx.args))
    attributes = split_names(attr)
    if not attributes:
        raise InputError("--attr names no boundary")
    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1")
    cluster = ClusterOptions(workers=workers, scheduler=scheduler, scheduler_file=scheduler_file,
                             threads_per_worker=threads_per_worker, device=device)
    cluster.validate()
    index = read_index(latents, column)
    spec = build_spec(index=index, boundaries_path=boundaries, attributes=attributes, strengths=values,
                      out_dir=out_dir, generator=generator, conditions=split_names(condition), layers=layers,
                      mode=mode, noise=noise, shard_size=shard_size, batch_size=batch_size, limit=limit, force=force)
    summary = run_stage(spec, cluster, overwrite=overwrite, retry_errors=retry_errors, dry_run=dry_run,
                        progress=not quiet, console=err)
    if dry_run:
        out.print(f"plan: {summary.images} edits ({len(attributes)} attribute(s) x {len(values)} strengths) in "
                  f"{summary.shards} shards; {summary.shards_skipped} done, {summary.images_todo} to render; "
                  f"noise {'saved' if spec.config['use_saved_noise'] else 'const'}")
        return
    sheets = write_contact_sheets(out_dir, max_rows=sheet_rows) if summary.images_ok else {}
    if not quiet:
        out.print(summary_table(summary))
        for name, path in sheets.items():
            out.print(f"contact sheet {name}: {path}")
    if summary.failures:
        for shard, message in summary.failures[:MAX_FAILURES_SHOWN]:
            err.print(f"[red]shard {shard} failed:[/] {message}", highlight=False, soft_wrap=True)
        raise RunFailed(f"{len(summary.failures)} of {summary.shards} shards failed; rerun the same command to retry them")
