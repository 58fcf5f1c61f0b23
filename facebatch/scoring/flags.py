"""The flags table: a thresholded score as a NEW Parquet table beside the latents.

The projection output is never rewritten (it is the expensive part). Flags mirror the latents'
part files one for one, so `OUT/flags/part-00003.parquet` covers the rows of
`OUT/latents/part-00003.parquet`, and they join back on image_id.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from facebatch import __version__
from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.latents import parquet_files
from facebatch.pipeline.rundir import RunDir
from facebatch.pipeline.table import atomic_write_table, with_run_metadata
from facebatch.scoring.runtable import PART_COLUMN, RunTable
from facebatch.scoring.thresholds import Threshold

THRESHOLD_SIDE_FILE = "_threshold.json"


@dataclass
class FlagSummary:
    path: Path
    n_rows: int
    n_flagged: int
    n_unscored: int  # error rows and rows without a finite score: flag is null

    def to_dict(self) -> dict:
        return {"path": str(self.path), "rows": self.n_rows, "flagged": self.n_flagged, "unscored": self.n_unscored}


def default_destination(run: RunTable) -> Path:
    return RunDir(run.root).flags_dir


def _check_destination(run: RunTable, dest: Path, overwrite: bool) -> None:
    table = run.table_path.resolve()
    target = dest.resolve()
    if target == table or table in target.parents or (table.is_file() and target == table.parent):
        raise InputError(f"--flags-out {dest} is inside the projection output {run.table_path}: pick another folder")
    if dest.is_file():
        raise InputError(f"--flags-out {dest} is a file; it must be a folder")
    if dest.is_dir() and parquet_files(dest) and not overwrite:
        raise InputError(f"a flags table already exists at {dest}; pass --overwrite to replace it")


def _part_table(frame, threshold: Threshold, meta: dict) -> pa.Table:
    values = frame[threshold.score].to_numpy(dtype=np.float64)
    ok = (frame["status"] == "ok").to_numpy()
    scored = ok & np.isfinite(values)
    status = np.where(scored, "ok", "error")
    projection_errors = [None if pd.isna(e) else str(e) for e in frame["error"]]
    error = [
        None if s else (f"no finite {threshold.score} value" if k else (e or "projection failed"))
        for s, k, e in zip(scored, ok, projection_errors)
    ]
    columns = {
        "image_id": pa.array(frame["image_id"].astype(str).tolist(), pa.string()),
        "status": pa.array(status.tolist(), pa.string()),
        "error": pa.array(error, pa.string()),
        threshold.score: pa.array(values, pa.float64()),
        threshold.flag_column: pa.array(threshold.flags(values), pa.bool_(), mask=~scored),
    }
    if "source_path" in frame:
        columns["source_path"] = pa.array(frame["source_path"].astype(object).tolist(), pa.string())
    table = pa.table(columns)
    return table.replace_schema_metadata(with_run_metadata(table.schema, meta).metadata)


def write_flags(run: RunTable, threshold: Threshold, dest: Path | None = None, overwrite: bool = False) -> FlagSummary:
    dest = storage.location(dest) if dest is not None else default_destination(run)
    _check_destination(run, dest, overwrite)
    meta = {
        "stage": "score-flags",
        "threshold": threshold.to_dict(),
        "source_table": str(run.table_path),
        "generator_sha256": run.generator_sha256(),
        "facebatch": __version__,
    }
    written, flagged, unscored = set(), 0, 0
    for part, frame in run.frame.groupby(PART_COLUMN, sort=True):
        table = _part_table(frame, threshold, meta)
        path = dest / part
        atomic_write_table(path, table)
        written.add(path.resolve())
        flags = table.column(threshold.flag_column)
        flagged += int(pc.sum(flags).as_py() or 0)
        unscored += flags.null_count
    threshold.save(dest / THRESHOLD_SIDE_FILE)
    for stale in parquet_files(dest):  # parts of an earlier run that this one does not cover (--overwrite)
        if stale.resolve() not in written:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
    return FlagSummary(dest, len(run.frame), flagged, unscored)
