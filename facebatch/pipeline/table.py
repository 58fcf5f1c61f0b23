"""Parquet tables of latents: one schema convention and the atomic part writer, shared by every stage.

A latent column of shape (num_ws, w_dim) is a nested ``fixed_size_list<fixed_size_list<float32>[w_dim]>
[num_ws]`` (one level per dimension), so readers that have never heard of facebatch see its shape:
Polars reads it as ``Array(Float32, shape=(num_ws, w_dim))`` (``.to_numpy()`` gives ``(N, num_ws, w_dim)``),
DuckDB as ``FLOAT[][]``, pyarrow as the nested type, and pandas and ``dask.dataframe.read_parquet`` read
it too (as arrays of arrays). Arrow's ``fixed_shape_tensor`` extension type was measured and rejected: Polars
and DuckDB read it flat, and dask cannot read it at all (dask 2026.8, Polars 2.1, DuckDB 2.0; see
tests/test_table.py). The field metadata also holds the shape, and parts written before the nesting (one flat
``fixed_size_list<float32>[num_ws * w_dim]``) still read. Run-level facts (generator sha256, config,
versions) go into the schema metadata under the ``facebatch`` key. `facebatch.pipeline.latents` reads the
tables back.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facebatch.errors import InputError, first_line
from facebatch.pipeline.atomic import atomic_output

METADATA_KEY = b"facebatch"
SHAPE_KEY = b"shape"


def latent_type(shape: Sequence[int]) -> pa.DataType:
    """One fixed_size_list level per dimension: (18, 512) -> fixed_size_list<fixed_size_list<float>[512]>[18]."""
    typ = pa.float32()
    for dim in reversed(tuple(shape)):
        typ = pa.list_(typ, int(dim))
    return typ


def latent_field(name: str, shape: Sequence[int]) -> pa.Field:
    return pa.field(name, latent_type(shape), metadata={SHAPE_KEY: json.dumps(list(shape)).encode()})


def _nested(flat: np.ndarray, shape: Sequence[int], mask: pa.Array | None = None) -> pa.Array:
    arr = pa.array(np.ascontiguousarray(flat, dtype=np.float32).reshape(-1))
    for dim in reversed(tuple(shape)[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, int(dim))
    return pa.FixedSizeListArray.from_arrays(arr, int(tuple(shape)[0]), mask=mask)


def latent_array(latents: np.ndarray | None, n_rows: int, shape: Sequence[int]) -> pa.Array:
    """Arrow array for a latent column; ``latents`` may hold NaN-free rows or be None (all null)."""
    if latents is None:
        return pa.nulls(n_rows, latent_type(shape))
    return _nested(np.asarray(latents).reshape(n_rows, -1), shape)


def latent_array_masked(latents: np.ndarray, valid: np.ndarray, shape: Sequence[int]) -> pa.Array:
    """Latent column where rows with ``valid == False`` are null (error rows keep their place)."""
    mask = pa.array(~np.asarray(valid, dtype=bool))
    return _nested(np.asarray(latents).reshape(len(valid), -1), shape, mask=mask)


def latents_schema(
    num_ws: int,
    w_dim: int,
    *,
    about: Sequence[pa.Field] = (),
    latents: Sequence[pa.Field] = (),
    after: Sequence[pa.Field] = (),
) -> pa.Schema:
    """The columns every table of W+ codes shares, in one order: image_id, what a stage knows `about` the row,
    status, error, its other `latents`, w (num_ws, w_dim), then the rest (`after`: scores, timings)."""
    return pa.schema(
        [
            pa.field("image_id", pa.string()),
            *about,
            pa.field("status", pa.string()),
            pa.field("error", pa.string()),
            *latents,
            latent_field("w", (num_ws, w_dim)),
            *after,
        ]
    )


def field_shape(fld: pa.Field) -> tuple[int, ...] | None:
    if fld.metadata and SHAPE_KEY in fld.metadata:
        return tuple(json.loads(fld.metadata[SHAPE_KEY]))
    return None


def flat_rows(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A latent column (nested or flat fixed-size lists) as an (N, size) float32 array of its values; the
    values under a null row are whatever the writer left there (mask them with ``col.is_valid()``)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    # .values of a fixed-size list ignores the array's offset (null slots still occupy their values): slice it.
    while pa.types.is_fixed_size_list(arr.type):
        size = arr.type.list_size
        arr = arr.values.slice(arr.offset * size, len(arr) * size)
    return arr.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(n, -1)


def column_to_numpy(table: pa.Table, name: str) -> np.ndarray:
    """A latent column as an (N, *shape) float32 array; null rows come back as NaN."""
    shape = field_shape(table.schema.field(name))
    col = table.column(name).combine_chunks()
    vals = flat_rows(col)
    out = np.full(vals.shape, np.nan, dtype=np.float32)
    if len(col):
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        out[valid] = vals[valid]
    return out.reshape((len(col),) + (shape or (vals.shape[1],)))


def with_run_metadata(schema: pa.Schema, meta: Mapping[str, Any]) -> pa.Schema:
    existing = dict(schema.metadata or {})
    existing[METADATA_KEY] = json.dumps(meta, sort_keys=True, default=str).encode()
    return schema.with_metadata(existing)


def run_metadata(schema: pa.Schema) -> dict:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def read_parquet(path, columns: Sequence[str] | None = None) -> pa.Table:
    """One Parquet file, local or on an object store (read through fsspec)."""
    from facebatch.pipeline import storage

    if storage.is_url(path):
        with storage.location(path).open("rb") as fh:
            return pq.read_table(fh, columns=list(columns) if columns is not None else None)
    return pq.read_table(path, columns=list(columns) if columns is not None else None)


def open_dataset(source):
    """pyarrow.dataset over a folder or a list of files, local or on an object store. A URL is never handed to
    pyarrow as a string: pyarrow would open it with its own S3 client, which knows nothing of fsspec's endpoint
    and credentials (and would ask AWS itself)."""
    import pyarrow.dataset as pads

    from facebatch.pipeline import storage

    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if items and storage.is_url(items[0]):
        locs = [storage.location(i) for i in items]
        paths = [loc.path for loc in locs]
        return pads.dataset(
            paths if isinstance(source, (list, tuple)) else paths[0], format="parquet", filesystem=locs[0].fs
        )
    paths = [str(i) for i in items]
    return pads.dataset(paths if isinstance(source, (list, tuple)) else paths[0], format="parquet")


def parquet_source(path):
    """What pyarrow's readers (read_metadata, read_schema, ParquetFile) take: the path, or an open object-store
    file (the caller closes it by closing the ParquetFile, or lets it go)."""
    from facebatch.pipeline import storage

    return storage.location(path).open("rb") if storage.is_url(path) else path


def atomic_write_table(path: Path, table: pa.Table) -> None:
    """Parquet (zstd) through the atomic writer: a reader never sees a part half written."""
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


@contextlib.contextmanager
def reading_parquet(path: Path) -> Iterator[None]:
    """A Parquet file that cannot be read (corrupt, truncated, not Parquet) is an InputError naming it: pyarrow's
    own messages ("Parquet magic bytes not found", "Couldn't deserialize thrift") do not say which file.
    An OSError with an errno (permission, a full disk) is the environment's and passes through."""
    try:
        yield
    # UnicodeDecodeError: Parquet strings are not checked as UTF-8; JSONDecodeError: damaged facebatch metadata
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise InputError(f"{path}: not a readable Parquet file ({first_line(exc)})") from None


def read_parts_frame(parts: Sequence[Path], columns: Sequence[str] | None = None):
    """A run's own table read back part by part (a manifest, the labels) as one DataFrame, in part order; a
    damaged part is an InputError naming it (pyarrow's dataset reader raises ArrowInvalid)."""
    import pandas as pd

    frames = []
    for part in parts:
        with reading_parquet(part):
            frames.append(read_parquet(part, columns).to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns or []))
