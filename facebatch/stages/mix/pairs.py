"""PAIRS.csv and the `--latents` runs it may name: one item per pair, ids safe as folder names."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.rundir import RunDir
from facebatch.pipeline.table import parquet_source, read_parquet, reading_parquet

if TYPE_CHECKING:
    from facebatch.stages.mix.apps import App

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")
MAX_ID = 80


def safe_pair_id(text: str) -> str:
    """A single path component: no separators, no leading dots (so never '..'), at most MAX_ID characters."""
    name = _UNSAFE.sub("_", text.strip()).lstrip(".")[:MAX_ID]
    return name or "pair"


def unique_pair_ids(raw: Sequence[str]) -> list[str]:
    """Pair ids from what PAIRS.csv says (a pair_id, or the sides' stems): sanitised, and made unique
    (case-insensitively: some file systems are) with -2, -3, ..."""
    seen: set[str] = set()
    out = []
    for text in raw:
        base = safe_pair_id(text)
        name, n = base, 1
        while name.casefold() in seen:
            n += 1
            name = f"{base[: MAX_ID - 4]}-{n}"
        seen.add(name.casefold())
        out.append(name)
    return out


@dataclass
class LatentRuns:
    """The `--latents` runs: image_id -> where its code (and noise maps, source image) are."""

    where: dict[str, dict] = field(default_factory=dict)
    sha256: str | None = None
    paths: list[str] = field(default_factory=list)
    index: Any = None  # the first run's LatentIndex (for resolve_generator)


def open_runs(paths: Sequence[Path]) -> LatentRuns:
    """Index every run; runs made with different generators cannot be mixed (an InputError)."""
    import pyarrow.parquet as pq

    from facebatch.pipeline.latents import open_latents

    runs = LatentRuns()
    for path in paths:
        source = open_latents(storage.location(path))
        index = source.index("w")
        sha = index.generator_sha256
        if runs.sha256 is not None and sha != runs.sha256:
            raise InputError(
                f"--latents {path} was made with generator {str(sha)[:12]}, {runs.paths[0]} with "
                f"{runs.sha256[:12]}: inputs from runs of different generators cannot be mixed"
            )
        runs.sha256 = sha
        runs.paths.append(str(path))
        runs.index = runs.index or index
        sources = {}
        for f in source.files:
            with reading_parquet(f):
                names = pq.read_schema(parquet_source(f)).names
                t = read_parquet(f, ["image_id", "source_path"]) if "source_path" in names else None
            if t is not None:
                sources.update(zip(t.column("image_id").to_pylist(), t.column("source_path").to_pylist()))
        for n, image_id in enumerate(index.image_ids):
            if image_id in runs.where or not index.ok[n]:
                continue
            part = storage.location(index.files[index.file_of_row[n]])
            noise = RunDir.of_part(part).noise_part(part.stem)
            runs.where[str(image_id)] = {
                "part": str(part.resolve()),
                "row": int(index.row_in_file[n]),
                "noise": str(noise.resolve()) if noise.exists() else None,
                "source_path": sources.get(image_id),
            }
    return runs


def _side(ref: str, base: Path, runs: LatentRuns | None) -> dict | None:
    ref = (ref or "").strip()
    if not ref:
        return None
    if runs is not None and ref in runs.where:
        return {"ref": ref, **runs.where[ref]}
    return {"ref": ref, "path": _beside(ref, base)}


def _beside(ref: str, base) -> str:
    """A file named in the pairs CSV: a URL or an absolute path as is, a relative one from the CSV's folder."""
    if storage.is_url(ref):
        return ref
    path = Path(ref).expanduser()
    return str(path if path.is_absolute() else (base / path))


def read_pairs(pairs_csv: Path, app: App, runs: LatentRuns | None = None) -> list[dict]:
    """PAIRS.csv -> items. Whole-file problems raise InputError; a bad cell becomes a per-pair error later."""
    pairs_csv = storage.location(pairs_csv)
    if not pairs_csv.is_file():
        raise InputError(f"no such pairs file: {pairs_csv}")
    try:
        with pairs_csv.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [(h or "").strip() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read pairs file {pairs_csv}: {exc}") from None
    need = list(app.columns)
    missing = [c for c in need if c not in header]
    if missing:
        raise InputError(
            f"{pairs_csv} lacks column(s) {', '.join(missing)} (has: {', '.join(header) or 'no header'}); "
            f"{app.name} needs {', '.join(need)}" + (", optional mask" if app.default_mask else "")
        )
    if not rows:
        raise InputError(f"{pairs_csv} has no pairs")
    rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items() if k is not None} for r in rows]
    base = pairs_csv.parent if storage.is_url(pairs_csv) else pairs_csv.parent.resolve()

    def stem(ref: str) -> str:
        return Path(ref).stem if ref else "missing"

    raw_ids = [r.get("pair_id") or "+".join(stem(r[c]) for c in app.columns) for r in rows]
    items = []
    for line, (r, pair_id) in enumerate(zip(rows, unique_pair_ids(raw_ids)), start=2):
        item = {
            "image_id": pair_id,
            "line": line,
            "a": _side(r["a"], base, runs),
            "b": _side(r.get("b", ""), base, runs) if "b" in app.columns else None,
            "neutral": _side(r.get("neutral", ""), base, runs) if app.takes_neutral else None,
            "mask": None,
        }
        mask = r.get("mask", "")
        if mask and app.default_mask:
            from facebatch.edit.masks import SHAPES

            item["mask"] = mask if mask in SHAPES else _beside(mask, base)
        empty = [c for c in need if item[c] is None]
        if empty:
            item["error"] = f"line {line}: empty cell(s) {', '.join(empty)}"
        items.append(item)
    return items
