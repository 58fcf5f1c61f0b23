"""labels.csv + a latents table -> fitted boundaries: the library half of `facebatch fit-boundaries`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from facebatch.edit.boundary import Boundary
from facebatch.edit.fit import FitSettings, features, fit_boundary
from facebatch.edit.labels import attribute_names, id_column, join_ids, parse_attribute, read_labels
from facebatch.edit.layers import parse_layers
from facebatch.errors import InputError
from facebatch.pipeline.latents import gather, read_index


@dataclass
class FitReport:
    boundaries: list[Boundary]
    label_rows: int
    matched: int
    unknown: int  # label rows with no latent (only with skip_unknown)
    not_ok: int  # label rows whose latent is an error row
    generator_sha256: str | None


def fit_from_labels(
    labels_path: Path,
    latents_path: Path,
    *,
    attrs: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    id_col: str | None = None,
    skip_unknown: bool = False,
    settings: FitSettings | None = None,
    layers: str | None = None,
    column: str = "w",
) -> FitReport:
    """Every check on the labels runs before the latents are read, and every attribute is fitted
    before anything is written: a bad column never leaves a half-made boundaries file."""
    settings = replace(settings or FitSettings())
    settings.check()
    df = read_labels(labels_path)
    key = id_column(df, id_col)
    names = attribute_names(df, key, attrs, exclude)
    parsed = [parse_attribute(df, name) for name in names]

    index = read_index(latents_path, column)
    settings.layers = parse_layers(layers, index.num_ws)
    rows = join_ids(df[key].tolist(), index.image_ids, skip_unknown=skip_unknown)
    known = rows >= 0
    usable = known.copy()
    usable[known] = index.ok[rows[known]]
    label_rows = np.flatnonzero(usable)
    if not len(label_rows):
        raise InputError(f"none of the {int(known.sum())} matched label rows has an ok latent (all are error rows)")
    X = gather(index, rows[label_rows], lambda ws: features(ws, settings.space, settings.layers))
    boundaries = []
    for attr in parsed:
        boundaries.append(
            fit_boundary(
                attr.name, X, attr.values[label_rows], attr.kind, settings, index.num_ws, index.generator_sha256
            )
        )
    return FitReport(
        boundaries=boundaries,
        label_rows=len(df),
        matched=int(known.sum()),
        unknown=int((~known).sum()),
        not_ok=int((known & ~usable).sum()),
        generator_sha256=index.generator_sha256,
    )
