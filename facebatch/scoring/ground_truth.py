"""Binary ground truth for scoring: a labels CSV joined to the run's image_ids.

Reading, id matching and 0/1, -1/+1, true/false parsing are the boundary fitter's
(facebatch.edit.labels), so a labels file means the same thing to every command. Scoring adds
what it needs on top: labels must be binary, may name their positive value (fake/real), may
cover more images than the run, and must give both classes among the rows they join.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facebatch.edit.labels import id_column, join_ids, parse_attribute, read_labels
from facebatch.errors import InputError
from facebatch.pipeline import storage

LABEL_GUESSES = ("is_fake", "is_anomalous", "fake", "anomalous", "anomaly", "label")


@dataclass
class JoinedLabels:
    y: np.ndarray  # float per run row: 1 positive, 0 negative, NaN unlabelled
    path: Path
    column: str
    id_column: str
    n_label_rows: int
    n_joined: int
    n_unknown: int  # label rows that match no image of the run

    def summary(self) -> dict:
        return {
            "file": str(self.path),
            "column": self.column,
            "id_column": self.id_column,
            "label_rows": self.n_label_rows,
            "joined": self.n_joined,
            "unknown_ids": self.n_unknown,
        }


def pick_column(df: pd.DataFrame, id_col: str, requested: str | None) -> str:
    if requested:
        if requested not in df.columns:
            raise InputError(f"labels file has no column {requested!r} (columns: {', '.join(df.columns)})")
        return requested
    others = [c for c in df.columns if c != id_col]
    if len(others) == 1:
        return others[0]
    for guess in LABEL_GUESSES:
        if guess in others:
            return guess
    raise InputError(f"labels file has several columns ({', '.join(others[:8])}); pick one with --label-column")


def _binary(df: pd.DataFrame, column: str, positive: str | None) -> np.ndarray:
    raw = df[column].str.strip()
    present = raw != ""
    distinct = sorted(set(raw[present].str.lower()))
    if not distinct:
        raise InputError(f"label column {column!r} is empty")
    if len(distinct) > 2:
        shown = ", ".join(map(repr, distinct[:5])) + (", ..." if len(distinct) > 5 else "")
        raise InputError(f"label column {column!r} is not binary: {len(distinct)} distinct values ({shown})")
    if len(distinct) == 1:
        raise InputError(f"label column {column!r} has one class only ({distinct[0]!r}): AUROC and AP need both")
    values = np.full(len(df), np.nan)
    if positive is not None:
        if positive.strip().lower() not in distinct:
            raise InputError(
                f"--positive-label {positive!r} is not a value of {column!r} (values: {', '.join(distinct)})"
            )
        values[present.to_numpy()] = (raw[present].str.lower() == positive.strip().lower()).to_numpy(dtype=float)
        return values
    try:
        attr = parse_attribute(df, column)
    except InputError:
        attr = None  # two values, but not ones the shared parser reads as binary (e.g. fake/real)
    if attr is None or attr.kind != "binary":
        raise InputError(
            f"label column {column!r} has values {' and '.join(map(repr, distinct))}: use 0/1, -1/+1 or true/false, "
            "or name the positive one with --positive-label"
        )
    return attr.values


def join_labels(csv_path: Path, image_ids, column: str | None = None, positive: str | None = None) -> JoinedLabels:
    df = read_labels(storage.location(csv_path))
    id_col = id_column(df, None)
    col = pick_column(df, id_col, column)
    values = _binary(df, col, positive)
    keep = ~np.isnan(values)
    label_ids = df[id_col].to_numpy()[keep]
    rows = join_ids(list(label_ids), list(image_ids), skip_unknown=True)
    joined = rows >= 0
    if not joined.any():
        raise InputError(
            f"no row of {csv_path} joins the run: its {id_col} values (e.g. {label_ids[0]!r}) match no image_id "
            f"(e.g. {image_ids[0]!r})"
            if len(image_ids)
            else f"the run has no rows to join {csv_path} to"
        )
    y = np.full(len(image_ids), np.nan)
    y[rows[joined]] = values[keep][joined]
    return JoinedLabels(
        y=y,
        path=storage.location(csv_path),
        column=col,
        id_column=id_col,
        n_label_rows=int(keep.sum()),
        n_joined=int(joined.sum()),
        n_unknown=int((~joined).sum()),
    )
