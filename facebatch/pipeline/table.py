"""Parquet tables of latents: one schema convention and atomic writes, shared by every stage.

A latent column is a flat ``fixed_size_list<float32>[num_ws * w_dim]`` whose field metadata holds
the shape. Arrow's fixed-shape tensor type would read back shaped in pyarrow, but
``dask.dataframe.read_parquet`` cannot read it (verified with dask 2026.8), and DESIGN.md requires
pandas, dask and pyarrow to read every table. Run-level facts (generator sha256, config,
versions) go into the schema metadata under the ``facebatch`` key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from facebatch.errors import InputError

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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write, fsync, rename: a reader sees the old file or the whole new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_table(path: Path, table: pa.Table) -> None:
    """Parquet (zstd) through a dot-prefixed temp file, which dataset readers ignore, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class LatentTable:
    """A whole table read back: scalar columns as a DataFrame, latent columns as shaped arrays."""

    frame: pd.DataFrame
    latents: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def latent(self, name: str = "w") -> np.ndarray:
        if name not in self.latents:
            raise InputError(f"the table has no latent column {name!r} (has: {sorted(self.latents) or 'none'})")
        return self.latents[name]


def parquet_files(path: Path) -> list[Path]:
    """Data files of a table folder (or the file itself), skipping _/. prefixed side files."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"no such table or folder: {path}")
    return sorted(p for p in path.rglob("*.parquet") if not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts))


def read_latent_table(path: Path, columns: Iterable[str] | None = None) -> LatentTable:
    """Read a file or a folder of parts written by facebatch; latent columns come back shaped."""
    files = parquet_files(Path(path))
    if not files:
        raise InputError(f"no Parquet files under {path}")
    dataset = pads.dataset([str(f) for f in files], format="parquet")
    table = dataset.to_table(columns=list(columns) if columns is not None else None)
    schema = pq.read_schema(files[0])
    latents, scalar_cols = {}, []
    for fld in table.schema:
        name = fld.name
        src = schema.field(name) if name in schema.names else fld
        if field_shape(src) is not None:
            table_fld = table.schema.field(name).with_metadata(src.metadata)
            t = pa.table({name: table.column(name)}, schema=pa.schema([table_fld]))
            latents[name] = column_to_numpy(t, name)
        else:
            scalar_cols.append(name)
    frame = table.select(scalar_cols).to_pandas()
    return LatentTable(frame=frame, latents=latents, metadata=run_metadata(schema))
