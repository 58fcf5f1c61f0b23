"""Parquet tables of latents: one schema convention and the atomic part writer, shared by every stage.

A latent column is a flat ``fixed_size_list<float32>[num_ws * w_dim]`` whose field metadata holds
the shape. Arrow's fixed-shape tensor type would read back shaped in pyarrow, but
``dask.dataframe.read_parquet`` cannot read it (verified with dask 2026.8), and pandas, dask and
pyarrow must all read every table facebatch writes. Run-level facts (generator sha256, config,
versions) go into the schema metadata under the ``facebatch`` key. `facebatch.pipeline.latents` reads
the tables back.
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


def latent_field(name: str, shape: Sequence[int]) -> pa.Field:
    size = int(np.prod(shape))
    return pa.field(name, pa.list_(pa.float32(), size), metadata={SHAPE_KEY: json.dumps(list(shape)).encode()})


def latent_array(latents: np.ndarray | None, n_rows: int, shape: Sequence[int]) -> pa.Array:
    """Arrow array for a latent column; ``latents`` may hold NaN-free rows or be None (all null)."""
    size = int(np.prod(shape))
    typ = pa.list_(pa.float32(), size)
    if latents is None:
        return pa.nulls(n_rows, typ)
    flat = np.ascontiguousarray(latents, dtype=np.float32).reshape(n_rows, size)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), size)


def latent_array_masked(latents: np.ndarray, valid: np.ndarray, shape: Sequence[int]) -> pa.Array:
    """Latent column where rows with ``valid == False`` are null (error rows keep their place)."""
    size = int(np.prod(shape))
    flat = np.ascontiguousarray(latents, dtype=np.float32).reshape(len(valid), size)
    values = pa.array(flat.reshape(-1))
    mask = pa.array(~np.asarray(valid, dtype=bool))
    return pa.FixedSizeListArray.from_arrays(values, size, mask=mask)


def field_shape(fld: pa.Field) -> tuple[int, ...] | None:
    if fld.metadata and SHAPE_KEY in fld.metadata:
        return tuple(json.loads(fld.metadata[SHAPE_KEY]))
    return None


def column_to_numpy(table: pa.Table, name: str) -> np.ndarray:
    """A latent column as an (N, *shape) float32 array; null rows come back as NaN."""
    fld = table.schema.field(name)
    shape = field_shape(fld)
    col = table.column(name).combine_chunks()
    size = col.type.list_size
    out = np.full((len(col), size), np.nan, dtype=np.float32)
    if len(col):
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        # .values of a FixedSizeList skips nothing: null slots still occupy `size` values.
        vals = col.values.to_numpy(zero_copy_only=False).reshape(len(col), size)
        out[valid] = vals[valid]
    return out.reshape((len(col),) + (shape or (size,)))


def with_run_metadata(schema: pa.Schema, meta: Mapping[str, Any]) -> pa.Schema:
    existing = dict(schema.metadata or {})
    existing[METADATA_KEY] = json.dumps(meta, sort_keys=True, default=str).encode()
    return schema.with_metadata(existing)


def run_metadata(schema: pa.Schema) -> dict:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


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
