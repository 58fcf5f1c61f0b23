"""The options and the ending every batch command shares (project, sample, align, label, augment, mix).

One definition of where shards run (--workers/--scheduler/--scheduler-file/--threads-per-worker/--device)
and of how a run resumes (--overwrite/--retry-errors/--dry-run/--quiet), with --storage-option for URLs, so the
commands cannot drift apart in spelling, env var or help, and one `report_run` for the summary and failed shards.
`@batch_command` adds the run options to a command and hands it one `RunOptions` (`run`); the option
types are `Annotated` aliases, also usable alone (`nada` takes `--device` and `--overwrite` only).
"""

from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated, Callable, Optional

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
StorageOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--storage-option",
        metavar="KEY=VALUE",
        help=(
            "An fsspec option for the URLs (s3://, gs://, az://) this command reads and writes, e.g. "
            "endpoint_url=http://host:9000; repeatable. fsspec's config files and the cloud SDKs' variables also "
            "work. Never written to any output."
        ),
    ),
]


# (parameter, its option, default), in the order --help lists them after a command's own options.
RUN_PARAMETERS = (
    ("workers", WorkersOption, None),
    ("scheduler", SchedulerOption, None),
    ("scheduler_file", SchedulerFileOption, None),
    ("threads_per_worker", ThreadsPerWorkerOption, None),
    ("device", DeviceOption, "auto"),
    ("overwrite", OverwriteOption, False),
    ("retry_errors", RetryErrorsOption, False),
    ("dry_run", DryRunOption, False),
    ("quiet", QuietOption, False),
    ("storage_options", StorageOption, None),
)


def shared_options(parameters, into: str, build: Callable, without: tuple[str, ...] = ()):
    """A decorator that declares options several commands share once: typer sees `parameters` ((name, option,
    default) triples, less `without`) after the function's own options, and the function gets them as one
    keyword argument `into`, built by `build(**values)` (a typed options object)."""

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name != into]
        names = [name for name, _, _ in parameters if name not in without]
        shared = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
            for name, annotation, default in parameters
            if name in names
        ]

        @functools.wraps(fn)
        def command(*args, **kwargs):
            values = {name: kwargs.pop(name) for name in names if name in kwargs}
            return fn(*args, **{into: build(**values)}, **kwargs)

        hints = typing.get_type_hints(fn, include_extras=True)
        command.__signature__ = sig.replace(
            parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in own] + shared
        )
        command.__annotations__ = {p.name: p.annotation for p in command.__signature__.parameters.values()}
        return command

    return decorate


def _run_options(**values):
    from facebatch.pipeline import storage
    from facebatch.pipeline.run_options import RunOptions

    values["storage_options"] = storage.parse_options(values.get("storage_options") or ())
    return RunOptions(**values)


def batch_command(fn: Callable | None = None, *, without: tuple[str, ...] = ()):
    """Give a batch command the run options, as one `run: RunOptions` argument (`without`: those that mean
    nothing to it, e.g. align's --device). Declared here once, so every batch command spells them alike."""
    decorate = shared_options(RUN_PARAMETERS, "run", _run_options, without)
    return decorate(fn) if fn is not None else decorate


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
