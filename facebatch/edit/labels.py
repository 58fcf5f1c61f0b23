"""labels.csv: read it, decide binary vs continuous per column, and join it to the latents by image_id.

Every problem a user can make in the file ends in one InputError that names the column, the value
and the line, because a silently dropped or mis-joined label gives a plausible but wrong boundary.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np
import pandas as pd

from facebatch.errors import InputError
from facebatch.pipeline import storage

ID_COLUMNS = ("image_id", "path", "file", "filename", "image", "name")
TRUE_WORDS = {"true", "yes", "t", "y"}
FALSE_WORDS = {"false", "no", "f", "n"}


@dataclass
class Attribute:
    name: str
    values: np.ndarray  # float64, one per label row; NaN where the cell is empty
    kind: str  # "binary" (values 0/1) or "continuous"


MAX_LABELS_BYTES = 2 << 30  # a labels file is text with one row per image; past this it is not one


def read_labels(path: Path) -> pd.DataFrame:
    """All cells as strings (empty = missing), so type decisions are ours and errors can quote the cell.

    Read strictly with the csv module: every row must have as many cells as the header (pandas would
    silently shift a row with one cell too many into the index, so values come from the wrong column),
    and every header name must be unique (pandas renames a duplicate to "name.1" without a word).
    """
    path = storage.location(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file" if path.exists() else None
        raise InputError(f"no labels file at {path}" if what is None else f"labels file {path} is {what}")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        if path.stat().st_size > MAX_LABELS_BYTES:
            raise InputError(f"labels file {path} is larger than {MAX_LABELS_BYTES >> 30} GiB; not a labels table")
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh, delimiter=sep, skipinitialspace=True, strict=True))
    except UnicodeDecodeError as exc:
        raise InputError(f"labels file {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except csv.Error as exc:
        raise InputError(f"labels file {path} is not a readable CSV: {exc}") from None
    except OSError as exc:
        raise InputError(f"cannot read labels file {path}: {exc.strerror or exc}") from None
    numbered = [(n, row) for n, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if not numbered:
        raise InputError(f"labels file {path} is empty")
    (_, header), body = numbered[0], numbered[1:]
    header = [c.strip() for c in header]
    for i, name in enumerate(header):
        if not name:
            raise InputError(f"labels file {path}: column {i + 1} of the header has no name")
        if "\x00" in name:
            raise InputError(f"labels file {path}: the header holds a NUL byte (not a text table)")
        if name in header[:i]:
            raise InputError(
                f"labels file {path}: column {name!r} appears twice in the header (columns {header.index(name) + 1} "
                f"and {i + 1}); rename or remove one"
            )
    for line, row in body:
        if len(row) != len(header):
            raise InputError(
                f"labels file {path}, line {line}: {len(row)} cells, the header has {len(header)} "
                f"({', '.join(header[:6])}{', ...' if len(header) > 6 else ''}); fix the row (quote cells holding "
                f"{sep!r})"
            )
    if not body:
        raise InputError(f"labels file {path} has a header but no rows")
    df = pd.DataFrame([row for _, row in body], columns=header, dtype=str)
    df.index = pd.Index([line - 2 for line, _ in body])  # so that index + 2 is the file's line number
    return df


def id_column(df: pd.DataFrame, requested: str | None) -> str:
    if requested:
        if requested not in df.columns:
            raise InputError(f"labels file has no column {requested!r} (columns: {', '.join(df.columns)})")
        return requested
    for name in ID_COLUMNS:
        if name in df.columns:
            return name
    raise InputError(
        f"labels file has no image id column (looked for {', '.join(ID_COLUMNS)}); name it with --id-column "
        f"(columns: {', '.join(df.columns[:10])}{', ...' if len(df.columns) > 10 else ''})"
    )


def attribute_names(
    df: pd.DataFrame, id_col: str, attrs: Sequence[str] | None, exclude: Sequence[str] = ()
) -> list[str]:
    available = [c for c in df.columns if c != id_col and c not in exclude]
    if attrs:
        missing = [a for a in attrs if a not in df.columns or a == id_col]
        if missing:
            raise InputError(
                f"labels file has no attribute column(s) {', '.join(map(repr, missing))} "
                f"(has: {', '.join(available) or 'none'})"
            )
        return list(dict.fromkeys(attrs))
    if not available:
        raise InputError(f"labels file has no attribute columns besides {id_col!r}")
    return available


def parse_attribute(df: pd.DataFrame, name: str) -> Attribute:
    """0/1, -1/+1 and true/false columns are binary (1 = has the attribute); other numbers are scores."""
    raw = df[name].str.strip()
    present = raw != ""
    if not present.any():
        raise InputError(f"attribute {name!r} has no values (every cell is empty)")
    lowered = raw[present].str.lower()
    if lowered.isin(TRUE_WORDS | FALSE_WORDS).all():
        values = np.full(len(df), np.nan)
        values[present.to_numpy()] = lowered.isin(TRUE_WORDS).to_numpy(dtype=float)
        return _checked(Attribute(name, values, "binary"))
    numeric = pd.to_numeric(raw[present], errors="coerce")
    bad = numeric.isna() | ~np.isfinite(numeric.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        line = int(raw[present].index[row]) + 2  # header is line 1
        raise InputError(
            f"attribute {name!r} has a non-numeric value {raw[present].iloc[row]!r} on line {line} "
            "(use 0/1, -1/1, true/false or a number; leave the cell empty for unknown)"
        )
    values = np.full(len(df), np.nan)
    values[present.to_numpy()] = numeric.to_numpy(dtype=float)
    levels = set(np.unique(values[present.to_numpy()]).tolist())
    if levels <= {0.0, 1.0} or levels <= {-1.0, 1.0}:
        values = np.where(np.isnan(values), np.nan, (values > 0).astype(float))
        return _checked(Attribute(name, values, "binary"))
    _refuse_near_binary(name, raw[present], numeric.to_numpy(dtype=float))
    return _checked(Attribute(name, values, "continuous"))


def _refuse_near_binary(name: str, raw: pd.Series, numeric: np.ndarray) -> None:
    """A 0/1 or -1/1 column with a few stray values is a typo, not a score: refuse it, naming the line.

    Scores (probabilities, ratings) take many levels; a column whose cells are all but at most 5 % (and
    at most 3 cells) in one binary pair is read as binary with typos."""
    for pair in ((0.0, 1.0), (-1.0, 1.0)):
        stray = ~np.isin(numeric, pair)
        both = all(np.any(numeric == v) for v in pair)
        if both and 0 < stray.sum() <= max(1, min(3, int(0.05 * len(numeric)))):
            i = int(np.flatnonzero(stray)[0])
            line = int(raw.index[i]) + 2
            raise InputError(
                f"attribute {name!r} is {pair[0]:g}/{pair[1]:g} except for {int(stray.sum())} cell(s), e.g. "
                f"{raw.iloc[i]!r} on line {line}: fix the typo (or, for a score, use more than two levels)"
            )


def _checked(attr: Attribute) -> Attribute:
    levels = np.unique(attr.values[~np.isnan(attr.values)])
    if len(levels) < 2:
        raise InputError(
            f"attribute {attr.name!r} has a single {'class' if attr.kind == 'binary' else 'value'} "
            f"({levels[0]:g}) among its labelled rows: a boundary needs both sides"
        )
    return attr


def _key(text: str) -> str:
    return PurePosixPath(str(text).strip().replace("\\", "/")).as_posix() if text else ""


def join_ids(label_ids: Sequence[str], latent_ids: Sequence[str], skip_unknown: bool = False) -> np.ndarray:
    """Row in the latents for each label row (-1 = unknown, only with skip_unknown).

    An id matches a latent image_id exactly; failing that, a label path ending in "/<image_id>"
    (absolute or longer paths), then a bare file name that is unique among the latents.
    """
    exact = {}
    for row, lid in enumerate(latent_ids):
        exact.setdefault(_key(lid), row)
    by_name: dict[str, list[int]] = {}
    for row, lid in enumerate(latent_ids):
        by_name.setdefault(PurePosixPath(_key(lid)).name, []).append(row)
    rows = np.full(len(label_ids), -1, dtype=np.int64)
    for i, raw in enumerate(label_ids):
        key = _key(raw)
        if key in exact:
            rows[i] = exact[key]
            continue
        parts = PurePosixPath(key).parts
        for start in range(1, len(parts)):
            suffix = "/".join(parts[start:])
            if suffix in exact:
                rows[i] = exact[suffix]
                break
        else:
            candidates = by_name.get(PurePosixPath(key).name, []) if len(parts) == 1 else []
            if len(candidates) == 1:
                rows[i] = candidates[0]
    unknown = np.flatnonzero(rows < 0)
    if len(unknown) and not skip_unknown:
        examples = ", ".join(repr(str(label_ids[i])) for i in unknown[:3])
        latent_examples = ", ".join(repr(str(x)) for x in list(latent_ids)[:2])
        raise InputError(
            f"{len(unknown)} of {len(label_ids)} label rows match no latent image_id (e.g. {examples}; "
            f"latent ids look like {latent_examples or 'nothing: the table is empty'}); "
            "fix the ids or pass --skip-unknown"
        )
    matched = rows[rows >= 0]
    if len(np.unique(matched)) != len(matched):
        uniq, counts = np.unique(matched, return_counts=True)
        dup = str(latent_ids[int(uniq[counts > 1][0])])
        raise InputError(f"several label rows match the same latent image_id {dup!r}: one row per image")
    return rows
