"""Streaming access to a latents table for fitting and editing.

``read_latent_table`` loads every W+ code at once; at 500k images of an 18x512 generator that is
18 GB. Boundary fitting needs only the labelled rows, often only their mean over layers, so this
reads ids first and then streams the latent column in record batches, keeping what is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq

from facebatch.errors import InputError
from facebatch.pipeline.table import field_shape, parquet_files, run_metadata


@dataclass
class LatentIndex:
    files: list[Path]
    file_of_row: np.ndarray  # index into files
    row_in_file: np.ndarray
    image_ids: np.ndarray  # str objects
    ok: np.ndarray  # status == "ok" and the latent present
    column: str
    shape: tuple[int, ...]  # (num_ws, w_dim)
    metadata: dict

    @property
    def num_ws(self) -> int:
        return self.shape[0]

    @property
    def w_dim(self) -> int:
        return self.shape[1]

    @property
    def generator_sha256(self) -> str | None:
        meta = self.metadata
        return meta.get("generator_sha256") or (meta.get("config") or {}).get("generator_sha256")


def _latents_dir(path: Path) -> Path:
    """Accept OUT (the run folder) as well as OUT/latents or a single part file."""
    path = Path(path)
    if path.is_dir() and (path / "latents").is_dir():
        return path / "latents"
    return path


def read_index(path: Path, column: str = "w") -> LatentIndex:
    files = parquet_files(_latents_dir(path))
    if not files:
        raise InputError(f"no Parquet files under {path}: pass a `facebatch project` or `facebatch sample` output")
    schema = pq.read_schema(files[0])
    if column not in schema.names:
        raise InputError(f"{files[0]} has no latent column {column!r} (columns: {', '.join(schema.names)})")
    shape = field_shape(schema.field(column))
    if shape is None or len(shape) != 2:
        raise InputError(f"column {column!r} in {files[0]} is not a [num_ws, w_dim] latent column (shape {shape})")
    if "image_id" not in schema.names:
        raise InputError(f"{files[0]} has no image_id column")
    ids, ok, which, rows = [], [], [], []
    for i, f in enumerate(files):
        names = ["image_id", column] + (["status"] if "status" in schema.names else [])
        t = pq.read_table(f, columns=names)
        n = t.num_rows
        valid = t.column(column).is_valid().to_numpy(zero_copy_only=False)
        if "status" in t.column_names:
            valid &= np.asarray(t.column("status").to_pylist(), dtype=object) == "ok"
        ids.append(np.asarray(t.column("image_id").to_pylist(), dtype=object))
        ok.append(valid)
        which.append(np.full(n, i, dtype=np.int64))
        rows.append(np.arange(n, dtype=np.int64))
    return LatentIndex(
        files=files,
        file_of_row=np.concatenate(which),
        row_in_file=np.concatenate(rows),
        image_ids=np.concatenate(ids),
        ok=np.concatenate(ok),
        column=column,
        shape=tuple(shape),
        metadata=run_metadata(schema),
    )


def read_rows(files: list[Path], column: str, shape: tuple[int, ...], file_of_row: np.ndarray, row_in_file: np.ndarray,
              reduce: Callable[[np.ndarray], np.ndarray] | None = None, batch_size: int = 4096) -> np.ndarray:
    """Latents of the given (file, row) pairs in that order, each passed through ``reduce`` batch by batch."""
    size = int(np.prod(shape))
    reduce = reduce or (lambda x: x)
    out: np.ndarray | None = None
    for fi in np.unique(file_of_row):
        want = np.flatnonzero(file_of_row == fi)
        wanted_rows = row_in_file[want]
        order = np.argsort(wanted_rows, kind="stable")
        wanted_sorted, dest_sorted = wanted_rows[order], want[order]
        start = 0
        for batch in pq.ParquetFile(files[int(fi)]).iter_batches(columns=[column], batch_size=batch_size):
            stop = start + batch.num_rows
            lo, hi = np.searchsorted(wanted_sorted, [start, stop])
            if hi > lo:
                col = batch.column(0)
                # .values ignores the array's offset; slice explicitly (null slots still hold `size` values).
                values = col.values.slice(col.offset * size, len(col) * size)
                flat = values.to_numpy(zero_copy_only=False).reshape(batch.num_rows, size)
                picked = flat[wanted_sorted[lo:hi] - start].reshape((hi - lo,) + tuple(shape))
                reduced = np.asarray(reduce(picked.astype(np.float32, copy=False)))
                if out is None:
                    out = np.empty((len(file_of_row),) + reduced.shape[1:], dtype=reduced.dtype)
                out[dest_sorted[lo:hi]] = reduced
            start = stop
    if out is None:
        return np.empty((0,) + tuple(shape), dtype=np.float32)
    return out


def gather(index: LatentIndex, rows: np.ndarray, reduce: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64)
    return read_rows(index.files, index.column, index.shape, index.file_of_row[rows], index.row_in_file[rows], reduce)
