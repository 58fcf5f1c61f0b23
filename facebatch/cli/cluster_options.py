"""The options and the ending every shard-runner command shares (project, align, augment).

One definition of where shards run (--workers/--scheduler/--scheduler-file/--threads-per-worker/--device)
and of how a run resumes (--overwrite/--retry-errors/--dry-run/--quiet), so the commands cannot drift
apart in spelling, env var or help, and one `report_run` for the summary and failed shards.
The option types are `Annotated` aliases: a command lists `workers: WorkersOption = None` in its signature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from facebatch.cli.console import err, out, styled
from facebatch.errors import RunFailed

MAX_FAILURES_SHOWN = 5

WorkersOption = Annotated[
    Optional[int],
    typer.Option(
        "--workers",
        "-w",
        help=(
            "Local worker processes; 0 = in this process, no Dask. Default: one per GPU; on CPUs this process "
            "below 8 usable cores, else cores/4 of 4 torch threads (`facebatch info` shows which)."
        ),
    ),
]
SchedulerOption = Annotated[
    Optional[str],
    typer.Option(
        "--scheduler", envvar="DASK_SCHEDULER_ADDRESS", help="Use a running Dask cluster, e.g. tcp://host:8786."
    ),
]
SchedulerFileOption = Annotated[
    Optional[Path], typer.Option("--scheduler-file", help="Use a running Dask cluster by its scheduler file.")
]
ThreadsPerWorkerOption = Annotated[
    Optional[int],
    typer.Option(
        "--threads-per-worker",
        help="Torch threads per worker (default: usable cores / workers; OMP_NUM_THREADS lowers it).",
    ),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="auto | cpu | cuda | cuda:N (cuda fails if no GPU is visible).")
]

OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Delete this stage's earlier outputs in OUT and start again.")
]
RetryErrorsOption = Annotated[
    bool, typer.Option("--retry-errors", help="Also recompute the rows that ended with status 'error'.")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the plan (what would run, what is done) and exit.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")]


def cluster_options(
    workers: int | None = None,
    scheduler: str | None = None,
    scheduler_file: Path | None = None,
    threads_per_worker: int | None = None,
    device: str = "auto",
):
    """Validated ClusterOptions: a bad combination is a one-line user error before anything is loaded."""
    from facebatch.pipeline.cluster import ClusterOptions  # keeps `facebatch --help` free of the pipeline imports

    cluster = ClusterOptions(
        workers=workers,
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        threads_per_worker=threads_per_worker,
        device=device,
    )
    cluster.validate()
    return cluster


def run_shards(spec, cluster, overwrite: bool, retry_errors: bool, dry_run: bool, quiet: bool):
    """run_stage with the CLI's progress and, on Ctrl-C, the hint that the run resumes (every stage resumes alike)."""
    from facebatch.pipeline.runner import run_stage

    try:
        return run_stage(
            spec,
            cluster,
            overwrite=overwrite,
            retry_errors=retry_errors,
            dry_run=dry_run,
            progress=not quiet,
            console=err,
        )
    except KeyboardInterrupt:
        err.print("interrupted: finished shards are kept; rerun the same command to resume", highlight=False)
        raise


def report_run(summary, quiet: bool) -> None:
    """The summary table (unless --quiet), then each failed shard on stderr and exit 1 if any failed."""
    from facebatch.pipeline.summary import summary_table

    if not quiet:
        out.print(summary_table(summary))
    if summary.failures:
        for shard, message in summary.failures[:MAX_FAILURES_SHOWN]:
            err.print(styled((f"shard {shard} failed:", "red"), " ", message), highlight=False, soft_wrap=True)
        raise RunFailed(
            f"{len(summary.failures)} of {summary.shards} shards failed; rerun the same command to retry them"
        )
