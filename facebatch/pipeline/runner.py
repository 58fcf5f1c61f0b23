"""The shard runner every long stage goes through: plan, resume check, Dask fan-out, markers, summary.

A stage is two top-level functions: `setup(WorkerSetup) -> state` (run once per worker process: the model)
and `process(state, items, info) -> pyarrow.Table` (one row per item, errors as rows). The runner owns
everything else: shards, atomic parts, `_stats` markers, `_run.json`, `_SUCCESS`, retries, Ctrl-C.
Kept in one module (over 400 lines) because the resume check, the run record and the two executors (this
process, Dask) must agree on one plan and one marker format; reading them side by side is the point.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
from rich.console import Console

from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.atomic import atomic_write_bytes, atomic_write_json
from facebatch.pipeline.cluster import ClusterOptions, open_client, task_resources
from facebatch.pipeline.plan import Shard, config_diff, config_hash, digest, plan_hash, plan_shards, versions
from facebatch.pipeline.progress import image_progress, reporting_steps, steps_topic
from facebatch.pipeline.records import JsonRecord, RunRecord, WorkerSetup, to_json
from facebatch.pipeline.rundir import RunDir
from facebatch.pipeline.shard_task import ShardInfo, ShardTask, run_shard
from facebatch.pipeline.summary import RunSummary, merge_scores
from facebatch.pipeline.table import parquet_source

__all__ = ["ClusterOptions", "RunSummary", "ShardInfo", "StageSpec", "run_stage"]


@dataclass
class StageSpec:
    name: str  # "project", "align", "augment"
    out_dir: Path  # parts go to OUT/<table>/part-NNNNN.parquet
    table: str  # e.g. "latents"
    items: list[dict]  # one JSON-able dict per input, with "image_id"; the order defines the shards
    shard_size: int
    # The resolved config, a frozen JsonRecord: its JSON's hash decides whether a rerun may resume. A plain dict
    # (an ad-hoc stage) reaches setup merged with the runtime, device and torch_threads in one dict.
    config: JsonRecord | dict
    setup: Callable[[Any], Any]  # top-level: WorkerSetup(config, runtime, device) -> worker state, once per process
    process: Callable[[Any, list[dict], ShardInfo], pa.Table]  # top-level: one row per item
    runtime: JsonRecord | dict = field(default_factory=dict)  # reaches setup but not the hash (paths, batch size)
    schema: pa.Schema | None = None  # when given, every part is cast to it (parts must agree for readers)
    score_columns: Sequence[str] = ()  # numeric columns summarised in the run summary
    side_dirs: Sequence[str] = ()  # OUT subfolders the stage writes (removed by --overwrite)
    metadata: dict = field(default_factory=dict)  # extra run facts for _run.json and the schema (generator sha256)
    max_retries: int = 1  # extra tries for a shard whose task raised (a dead worker is retried by Dask itself)
    rows_per_item: str = (
        "one"  # "many": process may return 0..n rows per item (align --faces all), grouped in item order
    )
    steps_per_item: int = 0  # optimisation steps per item, reported with report_steps (0: no steps bar)


@dataclass
class _Prepared:
    shards: list[Shard]
    config_hash: str
    plan_hash: str
    done: dict[str, dict]  # shard name -> marker, for finished shards
    todo: list[Shard]
    retry: list[Shard]


def run_stage(
    spec: StageSpec,
    cluster: ClusterOptions,
    *,
    overwrite: bool = False,
    retry_errors: bool = False,
    dry_run: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> RunSummary:
    """Run (or resume) a stage; returns the summary. Raises InputError on a refused resume, re-raises Ctrl-C."""
    cluster.validate()
    # Resolved here, on the client: a task carries absolute paths, never ones a worker would resolve
    # against its own working folder.
    run_dir = RunDir(storage.absolute(spec.out_dir), spec.table)
    started = time.perf_counter()
    if dry_run:
        prep = _prepare(spec, run_dir, overwrite=overwrite, retry_errors=retry_errors, check=not overwrite)
        return _summary(spec, run_dir, prep, prep.done, [], started, dry_run=True)
    with run_dir.lock():
        if overwrite:
            _check_same_kind(spec, run_dir)
            run_dir.remove_outputs(spec.side_dirs)
        prep = _prepare(spec, run_dir, overwrite=overwrite, retry_errors=retry_errors, check=True)
        run_dir.remove_stale_temps(spec.side_dirs)
        run_record = _run_record(spec, run_dir, prep, cluster)
        atomic_write_json(run_dir.run_file, run_record)
        work = prep.todo + prep.retry
        if work and run_dir.success_file.exists():
            run_dir.success_file.unlink()
        markers = dict(prep.done)
        failures: list[tuple[str, str]] = []
        status = "running"
        try:
            if work:
                _execute(spec, cluster, run_dir, prep, work, markers, failures, progress, console)
            status = "complete" if not failures else "incomplete"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except BaseException:
            status = "failed"
            raise
        finally:
            summary = _summary(spec, run_dir, prep, markers, failures, started)
            run_record.update(status=status, finished_at=time.time(), summary=summary.to_dict())
            atomic_write_json(run_dir.run_file, run_record)
        if status == "complete":
            atomic_write_bytes(run_dir.success_file, b"")
        summary.complete = status == "complete"
        return summary


def _prepare(spec: StageSpec, run_dir: RunDir, *, overwrite: bool, retry_errors: bool, check: bool) -> _Prepared:
    shards = plan_shards(spec.items, spec.shard_size)
    chash = config_hash(spec.name, spec.table, to_json(spec.config))
    phash = plan_hash(shards, spec.shard_size)
    if check:
        _check_resumable(spec, run_dir, chash, phash)
    markers = {} if overwrite else run_dir.read_markers()
    done, todo, retry = {}, [], []
    for shard in shards:
        m = markers.get(shard.name)
        finished = (
            m is not None
            and m.get("config_hash") == chash
            and m.get("ids_hash") == shard.ids_hash
            and part_intact(run_dir.part(shard.name), m)
        )
        if not finished:
            todo.append(shard)
        elif retry_errors and m.get("error", 0) > 0:
            retry.append(shard)
        else:
            done[shard.name] = m
    return _Prepared(shards, chash, phash, done, todo, retry)


def part_intact(part: Path, marker: dict) -> bool:
    """A finished part is trusted only while it is the file its marker describes: present, a regular
    file (not a link), the recorded size and content hash, and a readable Parquet footer with the recorded
    row count. A part truncated, replaced or altered in place afterwards is redone instead of being
    reported "already done" (markers written before the hash was recorded are checked without it)."""
    try:
        if part.is_symlink() or not part.is_file():
            return False
        if "part_bytes" in marker and storage.size(part) != marker["part_bytes"]:
            return False
        if "part_sha256" in marker:
            if storage.sha256(part) != marker["part_sha256"]:
                return False
        import pyarrow.parquet as pq

        return pq.read_metadata(parquet_source(part)).num_rows == marker.get("rows")
    except Exception:  # noqa: BLE001 - unreadable in any way: not a finished part
        return False


def _check_same_kind(spec: StageSpec, run_dir: RunDir) -> None:
    """--overwrite replaces a run of this command only: another command's run (possibly this command's
    input) is never deleted to make room."""
    previous = run_dir.read_run()
    if previous is not None and (previous.stage, previous.table) != (spec.name, spec.table):
        raise InputError(
            f"{run_dir.root} holds a '{previous.stage}' run; --overwrite replaces only a '{spec.name}' run: "
            "pick another output folder"
        )


def _check_resumable(spec: StageSpec, run_dir: RunDir, chash: str, phash: str) -> None:
    """Refuse to mix runs: another stage, config, generator or input in the same OUT needs --overwrite."""
    previous = run_dir.read_run()
    hint = "use --overwrite to replace it, or another --out"
    if previous is None:
        if any(run_dir.table_dir.glob("*.parquet")) or any(run_dir.stats_dir.glob("*.json")):
            raise InputError(
                f"{run_dir.table_dir} holds parts that no facebatch run recorded (no {run_dir.run_file.name}); {hint}"
            )
        return
    _check_same_kind(spec, run_dir)  # another command's run: --overwrite would not replace it either
    if previous.config_hash != chash:
        changes = config_diff(previous.config, to_json(spec.config))
        detail = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
        raise InputError(f"{run_dir.root} was started with other settings ({detail or 'config differs'}); {hint}")
    if previous.plan_hash != phash:
        old = previous.plan
        raise InputError(
            f"the input changed since the run in {run_dir.root} started ({old.get('items')} images in shards of "
            f"{old.get('shard_size')} then, {len(spec.items)} in shards of {spec.shard_size} now); {hint}"
        )


def _run_record(spec: StageSpec, run_dir: RunDir, prep: _Prepared, cluster: ClusterOptions) -> dict:
    previous = run_dir.read_run() or RunRecord()
    config = to_json(spec.config)
    return {
        "stage": spec.name,
        "table": spec.table,
        "config": config,
        "config_hash": prep.config_hash,
        "seed": config.get("seed"),
        **spec.metadata,
        "plan": {"items": len(spec.items), "shard_size": spec.shard_size, "shards": len(prep.shards)},
        "plan_hash": prep.plan_hash,
        "runtime": to_json(spec.runtime),
        "cluster": {k: str(v) if isinstance(v, Path) else v for k, v in vars(cluster).items()},
        "versions": versions(),
        "created_at": time.time() if previous.created_at is None else previous.created_at,
        "started_at": time.time(),
        "status": "running",
    }


def _tasks(
    spec: StageSpec, cluster: ClusterOptions, run_dir: RunDir, prep: _Prepared, work: list[Shard], run_id: str
) -> list[ShardTask]:
    # torch_threads reaches setup too: env vars cannot set it in this process (--workers 0) or on remote workers.
    place = {"device": cluster.device, "torch_threads": cluster.torch_threads()}
    runtime = {**place, **to_json(spec.runtime)}
    if isinstance(spec.config, dict):
        setup_config = {**spec.config, **runtime}
    else:
        setup_config = WorkerSetup(spec.config, spec.runtime, **place)
    meta = {
        "stage": spec.name,
        "config": to_json(spec.config),
        "config_hash": prep.config_hash,
        "versions": versions(),
        **spec.metadata,
    }
    retry = {s.name for s in prep.retry}
    return [
        ShardTask(
            stage=spec.name,
            info=ShardInfo(
                s.shard_id, s.name, len(prep.shards), run_dir.root, spec.table, prep.config_hash, s.name in retry
            ),
            items=list(spec.items[s.start : s.stop]),
            ids_hash=s.ids_hash,
            setup=spec.setup,
            process=spec.process,
            setup_config=setup_config,
            state_key=digest([prep.config_hash, runtime]),
            run_metadata=meta,
            schema=spec.schema,
            score_columns=tuple(spec.score_columns),
            rows_per_item=spec.rows_per_item,
            run_id=run_id,
            storage_options=storage.applied(),
        )
        for s in work
    ]


def _execute(spec, cluster, run_dir, prep, work, markers, failures, progress, console) -> None:
    run_id = uuid.uuid4().hex[:8]
    tasks = _tasks(spec, cluster, run_dir, prep, work, run_id)
    bar = image_progress(spec.name, console or Console(stderr=True), progress)
    total = sum(len(s) for s in work)
    steps = _StepsBar(bar, spec.steps_per_item, total) if spec.steps_per_item else None

    def finished(task: ShardTask, marker: dict | None, error: str | None) -> None:
        if marker is not None:
            markers[task.info.name] = marker
        else:
            failures.append((task.info.name, error or "unknown error"))
        bar.advance(bar_id, len(task.items))
        if steps is not None:
            steps.shard_done(len(task.items))

    with bar:
        bar_id = bar.add_task(spec.name, total=total, unit="images")
        if steps is not None:
            steps.start()
        on_steps = steps.add if steps is not None else None
        if cluster.in_process:
            with reporting_steps(on_steps or (lambda n: None)):
                _execute_here(tasks, spec.max_retries, finished)
        else:
            _execute_dask(tasks, spec, cluster, run_id, finished, on_steps)


class _StepsBar:
    """Image-steps done across the run: the workers' reports, never behind the finished shards' planned
    steps (an image that failed to load does none) and never past the total (a retried shard reports twice)."""

    def __init__(self, bar, steps_per_item: int, items: int):
        self.bar, self.per_item, self.total = bar, steps_per_item, steps_per_item * items
        self.reported = self.floor = 0
        self.lock = threading.Lock()

    def start(self) -> None:
        self.task = self.bar.add_task("", total=self.total, unit="image-steps")

    def add(self, n: int) -> None:
        with self.lock:
            self.reported += n
            self._show()

    def shard_done(self, items: int) -> None:
        with self.lock:
            self.floor += items * self.per_item
            self._show()

    def _show(self) -> None:
        self.bar.update(self.task, completed=min(self.total, max(self.reported, self.floor)))


def _execute_here(tasks: list[ShardTask], max_retries: int, finished) -> None:
    """--workers 0: shards run one after another in this process (debuggers, tiny inputs)."""
    for task in tasks:
        for attempt in range(max_retries + 1):
            try:
                finished(task, run_shard(task), None)
                break
            except Exception as exc:  # a shard failure is reported, not a crash of the whole run
                if attempt == max_retries:
                    finished(task, None, _describe(exc))


def _execute_dask(
    tasks: list[ShardTask], spec: StageSpec, cluster: ClusterOptions, run_id: str, finished, on_steps=None
) -> None:
    from distributed import as_completed

    # Unique, prefixed keys: dask may substitute a bare key into any string argument equal to it.
    keys = [f"facebatch-{spec.name}-{run_id}-{t.info.name}" for t in tasks]
    by_key = dict(zip(keys, tasks))
    with open_client(cluster) as client:
        if on_steps is not None:
            client.subscribe_topic(steps_topic(run_id), lambda event: on_steps(_event_steps(event)))
        if cluster.remote:
            _check_shared_filesystem(client, tasks[0].info.run, run_id)
        resources = task_resources(client, cluster)
        futures = client.map(run_shard, tasks, key=keys, pure=False, retries=spec.max_retries, resources=resources)
        try:
            for fut in as_completed(futures):
                task = by_key[fut.key]
                finished(task, *_outcome(fut, task))
                fut.release()
        except BaseException:
            client.cancel(futures, force=True)
            raise


def _event_steps(event) -> int:
    """A worker's progress event: (timestamp, {"steps": n}); anything else counts as nothing."""
    msg = event[1] if isinstance(event, tuple) and len(event) == 2 else event
    try:
        return max(int(msg.get("steps", 0)), 0)
    except (AttributeError, TypeError, ValueError):
        return 0


PROBE_PREFIX = ".facebatch-probe-"


def _read_probe(path: str, options: dict) -> str | None:
    """Runs on each worker: the token the client wrote, as this worker sees it (None: not there)."""
    storage.apply(options)
    try:
        with storage.location(path).open("r") as fh:
            return fh.read()
    except Exception:  # noqa: BLE001 - missing, denied or unreachable: this worker cannot see OUT
        return None


def _check_shared_filesystem(client, run: RunDir, run_id: str) -> None:
    """Workers of an existing cluster must see this client's --out: the client writes a marker and every
    worker reads it back. Otherwise parts would land in the workers' folders while _run.json and _SUCCESS
    land in the client's, and the run would report a success nobody can read."""
    probe = run.root / f"{PROBE_PREFIX}{run_id}"
    token = f"{run_id}-{uuid.uuid4().hex}"
    atomic_write_bytes(probe, token.encode())
    try:
        seen = client.run(_read_probe, str(probe), storage.applied())
    finally:
        if storage.is_url(probe):
            storage.remove(probe)
        else:
            probe.unlink(missing_ok=True)
    blind = sorted(worker for worker, got in seen.items() if got != token)
    if blind:
        raise InputError(
            f"the workers do not share this filesystem: {len(blind)} of {len(seen)} Dask workers "
            f"(e.g. {blind[0]}) cannot see {run.root}; a multi-host cluster needs --out (and the inputs and the "
            "generator) on a filesystem mounted at the same path on every worker"
        )


def _outcome(fut, task: ShardTask) -> tuple[dict | None, str | None]:
    """(marker, None) or (None, error). A worker that dies after publishing a shard takes the returned
    marker with it (result() then recomputes, or raises KilledWorker); the copy it wrote is as good."""
    try:
        if fut.status == "finished":
            return fut.result(), None
        exc = fut.exception()
    except Exception as raised:  # lost with its worker, and the recompute failed too
        exc = raised
    marker = _published_marker(task)
    return (marker, None) if marker is not None else (None, _describe(exc))


def _published_marker(task: ShardTask) -> dict | None:
    run_dir = task.info.run
    try:
        marker = json.loads(run_dir.marker(task.info.name).read_text())
    except (OSError, ValueError):
        return None
    mine = marker.get("run_id") == task.run_id and marker.get("ids_hash") == task.ids_hash
    return marker if mine and part_intact(run_dir.part(task.info.name), marker) else None


def _describe(exc: BaseException | None) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        return "the worker computing this shard died repeatedly (killed or out of memory)"
    if name == "CancelledError":
        return "cancelled (the cluster went away)"
    return f"{name}: {exc}"


def _summary(
    spec: StageSpec,
    run_dir: RunDir,
    prep: _Prepared,
    markers: dict[str, dict],
    failures,
    started,
    dry_run: bool = False,
) -> RunSummary:
    work = {s.name for s in prep.todo + prep.retry}
    new = [m for name, m in markers.items() if name in work]
    size = {s.name: len(s) for s in prep.shards}
    return RunSummary(
        stage=spec.name,
        out_dir=run_dir.root,
        table=spec.table,
        images=len(spec.items),
        rows_per_item=spec.rows_per_item,
        shards=len(prep.shards),
        shards_skipped=len(prep.done),
        shards_run=len(work) if dry_run else len(new),
        shards_failed=len(failures),
        images_ok=sum(m.get("ok", 0) for m in markers.values()),
        images_error=sum(m.get("error", 0) for m in markers.values()),
        images_processed=sum(m.get("processed", 0) for m in new),
        images_skipped=sum(size[name] for name in prep.done),
        images_todo=sum(size[name] for name in work),
        images_retried=sum(m.get("retried", 0) for m in new),
        wall_seconds=time.perf_counter() - started,
        scores=merge_scores(markers.values()),
        failures=list(failures),
        dry_run=dry_run,
        complete=not dry_run and not failures and len(markers) == len(prep.shards),
    )
