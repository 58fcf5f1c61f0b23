"""Read the scalar columns of a projection run (OUT/latents) without the latents themselves.

A W+ latent is num_ws * w_dim floats (36 KB at 1024 px): a million rows of them would not fit in
memory, and scoring needs none of them, so only scalar columns are read, part by part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facebatch.errors import InputError
from facebatch.pipeline.table import SHAPE_KEY, parquet_files, run_metadata

ID_COLUMNS = ("image_id", "status", "error", "source_path", "perceptual_backend")
PART_COLUMN = "_part"
RECONSTRUCTIONS_DIR = "reconstructions"


@dataclass
class RunTable:
    root: Path  # the run folder; reconstructions live under it
    table_path: Path  # the latents folder (or a single Parquet file)
    frame: pd.DataFrame  # every row, scalar columns only, plus PART_COLUMN
    numeric_columns: list[str]
    metadata: dict = field(default_factory=dict)

    @property
    def ok(self) -> np.ndarray:
        return (self.frame["status"] == "ok").to_numpy()

    @property
    def n_error(self) -> int:
        return int((~self.ok).sum())

    def reconstruction_path(self, image_id: str) -> Path:
        """The pipeline's agreed name: OUT/reconstructions/<image_id>.png exactly."""
        return self.root / RECONSTRUCTIONS_DIR / f"{image_id}.png"

    def generator_sha256(self) -> str | None:
        meta = self.metadata
        for key in ("generator_sha256", "model_sha256", "sha256"):
            if isinstance(meta.get(key), str):
                return meta[key]
        for key in ("generator", "model", "config"):
            sub = meta.get(key)
            if isinstance(sub, dict):
                for inner in ("generator_sha256", "sha256"):
                    if isinstance(sub.get(inner), str):
                        return sub[inner]
        return None


def locate_table(run: Path) -> tuple[Path, Path]:
    """(run root, table path): OUT (holding latents/), OUT/latents itself, or one Parquet file."""
    run = Path(run)
    if not run.exists():
        raise InputError(f"no such run folder: {run}")
    if (run / "latents").is_dir():
        return run, run / "latents"
    if run.is_file() or any(parquet_files(run)):
        root = run.parent if run.name == "latents" or run.is_file() else run
        return root, run
    raise InputError(f"{run} holds no latents/ table and no Parquet files: is it a `facebatch project` output folder?")


def _scalar_numeric(schema: pa.Schema) -> list[str]:
    names = []
    for fld in schema:
        shaped = fld.metadata and SHAPE_KEY in fld.metadata
        if not shaped and (pa.types.is_floating(fld.type) or pa.types.is_integer(fld.type)):
            names.append(fld.name)
    return names


def read_run(run: Path) -> RunTable:
    root, table_path = locate_table(run)
    files = parquet_files(table_path)
    if not files:
        raise InputError(f"no Parquet files under {table_path}")
    schema = pq.read_schema(files[0])
    if "image_id" not in schema.names:
        raise InputError(f"{files[0]} has no image_id column: not a facebatch table")
    numeric = [c for c in _scalar_numeric(schema) if c not in ID_COLUMNS]
    columns = [c for c in ID_COLUMNS if c in schema.names] + numeric
    frames = []
    for path in files:
        part = pq.ParquetFile(path)  # one footer read per part (thousands of parts in a large run)
        have = set(part.schema_arrow.names)
        missing = [c for c in columns if c not in have]
        if missing:
            raise InputError(f"{path} lacks column(s) {', '.join(missing)} that {files[0].name} has: mixed runs?")
        frame = part.read(columns=columns).to_pandas()  # scalar columns only: nothing to reshape
        frame[PART_COLUMN] = path.relative_to(table_path).as_posix() if table_path.is_dir() else path.name
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    if "status" not in frame:
        frame["status"] = "ok"  # a table without per-row status (e.g. written by another tool) is all ok
    if "error" not in frame:
        frame["error"] = None
    return RunTable(root=root, table_path=table_path, frame=frame, numeric_columns=numeric,
                    metadata=run_metadata(schema))
