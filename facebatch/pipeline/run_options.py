"""RunOptions: where a batch command's shards run and how it resumes, one typed object for every command.

Every batch command (project, sample, align, label, augment, mix) takes the same run settings; the CLI
declares them once (`facebatch.cli.cluster_options.batch_command`) and a notebook passes a `RunOptions`,
so both reach `run_batch` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from facebatch.pipeline.cluster import ClusterOptions


@dataclass(frozen=True)
class RunOptions:
    workers: int | None = None  # local worker processes (None: the default rule); 0 = this process
    scheduler: str | None = None  # a running Dask cluster, e.g. tcp://host:8786
    scheduler_file: Path | None = None
    threads_per_worker: int | None = None  # torch threads per worker (None: usable cores / workers)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    overwrite: bool = False  # delete this command's earlier run in OUT and start again
    retry_errors: bool = False  # also recompute the rows that ended with status error
    dry_run: bool = False  # plan only: what would run, what is done
    quiet: bool = False  # no progress bar
    # fsspec options for the URLs the command opens (endpoint_url, key, ...): a mapping or KEY=VALUE strings;
    # kept in memory only, never written to _run.json
    storage_options: Mapping[str, Any] | Sequence[str] = field(default_factory=dict, repr=False)

    @property
    def remote(self) -> bool:
        return bool(self.scheduler or self.scheduler_file)

    def with_(self, **changes) -> RunOptions:
        return replace(self, **changes)

    def configure_storage(self) -> None:
        """Make `storage_options` the options of every URL this command opens, here and on its workers."""
        from facebatch.pipeline import storage

        storage.configure(self.storage_options)

    def cluster(self) -> ClusterOptions:
        """The validated ClusterOptions: a bad combination or a misspelt device is one line before anything is
        loaded (on a worker it would fail every shard)."""
        from facebatch.nets.device import check_device

        check_device(self.device)
        cluster = ClusterOptions(
            workers=self.workers,
            scheduler=self.scheduler,
            scheduler_file=self.scheduler_file,
            threads_per_worker=self.threads_per_worker,
            device=self.device,
        )
        cluster.validate()
        return cluster


@dataclass
class BatchResult:
    """What every batch command returns: its run's summary (with dry_run: the plan) and the stage it ran."""

    summary: object  # RunSummary
    spec: object  # StageSpec

    @property
    def out_dir(self) -> Path:
        return Path(self.spec.out_dir)


def run_batch(spec, run: RunOptions, console=None):
    """Run (or resume, or plan with dry_run) a stage as `run` says; returns its RunSummary. Ctrl-C is
    re-raised after saying that the finished shards are kept (every stage resumes alike)."""
    from facebatch.pipeline.runner import run_stage

    try:
        return run_stage(
            spec,
            run.cluster(),
            overwrite=run.overwrite,
            retry_errors=run.retry_errors,
            dry_run=run.dry_run,
            progress=not run.quiet,
            console=console,
        )
    except KeyboardInterrupt:
        if console is not None:
            console.print("interrupted: finished shards are kept; rerun the same command to resume", highlight=False)
        raise
