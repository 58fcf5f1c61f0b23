"""The scalar columns of a projection run (OUT/latents), read without the latents themselves.

A W+ latent is num_ws * w_dim floats (36 KB at 1024 px): a million rows of them would not fit in
memory, and scoring needs none of them, so only scalar columns are read, part by part, through the
one latents reader (`facebatch.pipeline.latents`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from facebatch.errors import InputError
from facebatch.pipeline.latents import PART_COLUMN, generator_sha256, open_latents
from facebatch.pipeline.rundir import RunDir

ID_COLUMNS = ("image_id", "status", "error", "source_path", "perceptual_backend")
__all__ = ["PART_COLUMN", "RunTable", "read_run"]


@dataclass
class RunTable:
    run: RunDir  # the run folder; reconstructions live under it
    table_path: Path  # the latents folder (or a single Parquet file)
    frame: pd.DataFrame  # every row, scalar columns only, plus PART_COLUMN
    numeric_columns: list[str]
    metadata: dict = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.run.root

    @property
    def ok(self) -> np.ndarray:
        return (self.frame["status"] == "ok").to_numpy()

    @property
    def n_error(self) -> int:
        return int((~self.ok).sum())

    def reconstruction_path(self, image_id: str) -> Path:
        return self.run.reconstruction(image_id)

    def generator_sha256(self) -> str | None:
        return generator_sha256(self.metadata)


def read_run(run: Path) -> RunTable:
    source = open_latents(run, what="run folder")
    if "image_id" not in source.schema.names:
        raise InputError(f"{source.files[0]} has no image_id column: not a facebatch table")
    numeric = [c for c in source.scalar_numeric_columns() if c not in ID_COLUMNS]
    columns = [c for c in ID_COLUMNS if c in source.schema.names] + numeric
    return RunTable(
        run=source.run,
        table_path=source.path,
        frame=source.scalars(columns),
        numeric_columns=numeric,
        metadata=source.metadata,
    )
