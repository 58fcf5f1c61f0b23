"""What runs on a worker for one shard: cached stage state, the stage's rows, atomic publish, a small marker.

Only the marker dict travels back to the client (big arrays never travel through futures). The part is
published with a rename before the marker is written, so a marker always means a complete part; a worker
killed in between leaves a part without a marker, which the next run simply rewrites.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facebatch.pipeline import storage
from facebatch.pipeline.atomic import atomic_write_json, recording_writes
from facebatch.pipeline.cluster import worker_device
from facebatch.pipeline.progress import worker_step_reporting
from facebatch.pipeline.records import WorkerSetup
from facebatch.pipeline.rundir import RunDir
from facebatch.pipeline.table import atomic_write_table, read_parquet, with_run_metadata

_STATE: dict[str, Any] = {}
_STATE_LOCK = threading.Lock()
MAX_ERROR_SAMPLES = 5


@dataclass(frozen=True)
class ShardInfo:
    """What a stage's `process` may know about the shard it is computing."""

    shard_id: int
    name: str  # part-NNNNN
    n_shards: int
    out_dir: Path
    table: str
    config_hash: str
    retry: bool = False  # True when only the error rows of a finished shard are recomputed

    @property
    def run(self) -> RunDir:
        """The run folder: where this shard's part, marker and side outputs (e.g. noise maps) go."""
        return RunDir(self.out_dir, self.table)


@dataclass
class ShardTask:
    """Everything one task needs; small and picklable (functions travel by reference, never models)."""

    stage: str
    info: ShardInfo
    items: list[dict]
    ids_hash: str
    setup: Callable[[Any], Any]
    process: Callable[[Any, list[dict], ShardInfo], pa.Table]
    setup_config: WorkerSetup | dict  # what setup gets (a dict for an ad-hoc stage with a dict config)
    state_key: str
    run_metadata: dict
    schema: pa.Schema | None = None
    score_columns: Sequence[str] = ()
    rows_per_item: str = "one"  # "many": several rows may share an image_id (one per face)
    run_id: str = ""  # this client run: tells its markers from those an earlier run left
    # --storage-option values by protocol, applied on the worker before it opens a URL; held in task memory only
    storage_options: dict = field(default_factory=dict, repr=False)


def worker_state(setup: Callable[[Any], Any], key: str, config: WorkerSetup | dict) -> Any:
    """The stage state (e.g. a loaded model), built once per worker process and reused by every shard.

    Keyed by the config hash, so a long-lived remote worker that sees a new run drops the old model
    before loading the new one instead of holding both.
    """
    with _STATE_LOCK:
        if _STATE.get("key") != key:
            _STATE.clear()
            gc.collect()
            # The device is resolved here, in the worker: only a local GPU worker has its one GPU as cuda.
            if isinstance(config, WorkerSetup):
                config = config.on_device(worker_device(config.device))
            elif "device" in config:
                config = {**config, "device": worker_device(config["device"])}
            _STATE["state"] = setup(config)
            _STATE["key"] = key
        return _STATE["state"]


def run_shard(task: ShardTask) -> dict:
    with worker_step_reporting(task.run_id):
        return _run_shard(task)


def _run_shard(task: ShardTask) -> dict:
    storage.apply(task.storage_options)
    state = worker_state(task.setup, task.state_key, task.setup_config)
    start = time.perf_counter()  # after the (cached) model load: shard seconds measure the shard alone
    run_dir = task.info.run
    part = run_dir.part(task.info.name)
    earlier: list[str] = []
    with recording_writes() as written:  # the side files this shard writes, listed in its marker
        if task.info.retry:  # recompute only the rows of the existing part whose status is not ok
            earlier = _marker_files(run_dir, task.info.name)
            table, retried = _retry_rows(task, state, read_parquet(part))
        else:
            table, retried = _stage_rows(task, state, task.items), 0
        table = table.replace_schema_metadata(with_run_metadata(table.schema, task.run_metadata).metadata)
        atomic_write_table(part, table)
    marker = shard_marker(task, table, time.perf_counter() - start, retried)
    marker["part_bytes"] = storage.size(part)
    marker["part_sha256"] = storage.sha256(part)
    marker["files"] = sorted(set(earlier) | _relative(run_dir, written, exclude=part))
    atomic_write_json(run_dir.marker(task.info.name), marker)
    return marker


def _relative(run_dir: RunDir, paths: list, exclude) -> set[str]:
    skip = storage.relative_to(exclude, run_dir.root)
    found = {storage.relative_to(path, run_dir.root) for path in paths}
    return {rel for rel in found if rel is not None and rel != skip}


def _marker_files(run_dir: RunDir, name: str) -> list[str]:
    try:
        files = json.loads(run_dir.marker(name).read_text()).get("files") or []
    except (OSError, ValueError, AttributeError):
        return []
    return [str(f) for f in files if isinstance(f, str)]


def _stage_rows(task: ShardTask, state: Any, items: list[dict]) -> pa.Table:
    """The stage's table, checked: one row per item, in item order, cast to the declared schema."""
    table = task.process(state, items, task.info)
    if not isinstance(table, pa.Table):
        raise TypeError(f"stage {task.stage!r} returned {type(table).__name__}, not a pyarrow.Table")
    if task.schema is not None:
        table = table.select(task.schema.names).cast(task.schema)
    ids = [str(i["image_id"]) for i in items]
    got = table.column("image_id").to_pylist()
    ok = set(got) == set(ids) if task.rows_per_item == "many" else sorted(got) == sorted(ids)
    if not ok:
        raise RuntimeError(
            f"stage {task.stage!r} returned rows for {len(got)} ids, expected exactly the {len(ids)} of the shard"
        )
    return _in_item_order(table, ids)


def _in_item_order(table: pa.Table, ids: list[str]) -> pa.Table:
    """Rows grouped by item in item order; the rows of one item keep their own order (face 0, 1, ...)."""
    got = table.column("image_id").to_pylist()
    position = {image_id: n for n, image_id in enumerate(ids)}
    order = sorted(range(len(got)), key=lambda r: position[got[r]])
    return table if order == list(range(len(got))) else table.take(pa.array(order, pa.int64()))


def _retry_rows(task: ShardTask, state: Any, old: pa.Table) -> tuple[pa.Table, int]:
    """Recompute the error rows of a finished part; ok rows are kept byte for byte."""
    want = {i for i, s in zip(old.column("image_id").to_pylist(), old.column("status").to_pylist()) if s != "ok"}
    redo = [item for item in task.items if str(item["image_id"]) in want]
    if not redo:
        return old, 0
    fresh = _stage_rows(task, state, redo)
    fresh = fresh.select(old.schema.names).cast(old.schema)
    keep = old.filter(pc.invert(pc.is_in(old.column("image_id"), pa.array(sorted(want)))))
    merged = pa.concat_tables([keep, fresh])
    return _in_item_order(merged, [str(i["image_id"]) for i in task.items]), len(redo)


def score_stats(table: pa.Table, columns: Sequence[str]) -> dict[str, dict]:
    """Sums, not means, so the client can merge shards exactly (count, sum, sum of squares, min, max)."""
    ok = table.filter(pc.equal(table.column("status"), "ok")) if "status" in table.column_names else table
    stats = {}
    for name in columns:
        if name not in ok.column_names:
            continue
        vals = ok.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        vals = vals[np.isfinite(vals)]
        stats[name] = {
            "n": int(vals.size),
            "sum": float(vals.sum()),
            "sumsq": float(np.square(vals).sum()),
            "min": float(vals.min()) if vals.size else None,
            "max": float(vals.max()) if vals.size else None,
        }
    return stats


def _device_of(config: WorkerSetup | dict) -> str | None:
    """The torch device this worker computed on (what `auto` or a local GPU worker's `cuda:N` became)."""
    device = config.device if isinstance(config, WorkerSetup) else config.get("device")
    if device is None:
        return None
    from facebatch.nets.device import resolve_device

    return str(resolve_device(worker_device(device)))


def _dask_worker() -> str | None:
    """The address of the Dask worker running this shard (None in the client's own process)."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


def shard_marker(task: ShardTask, table: pa.Table, seconds: float, retried: int) -> dict:
    status = table.column("status").to_pylist()
    errors = [e for s, e in zip(status, table.column("error").to_pylist()) if s != "ok"]
    return {
        "shard": task.info.name,
        "shard_id": task.info.shard_id,
        "run_id": task.run_id,
        "config_hash": task.info.config_hash,
        "ids_hash": task.ids_hash,
        "rows": table.num_rows,
        "ok": table.num_rows - len(errors),
        "error": len(errors),
        "error_samples": errors[:MAX_ERROR_SAMPLES],
        "processed": retried if task.info.retry else table.num_rows,
        "retried": retried,
        "seconds": round(seconds, 3),
        "scores": score_stats(table, task.score_columns),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # of this worker process
        "host": socket.gethostname(),
        "worker": _dask_worker(),
        "device": _device_of(task.setup_config),
        "pid": os.getpid(),
        "finished_at": time.time(),
    }
