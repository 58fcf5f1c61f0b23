"""The manifest table: one row per output of a pair (or one error row), and the contact sheet drawn from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from facebatch.pipeline import storage
from facebatch.pipeline.rundir import MANIFEST, SHEETS, RunDir
from facebatch.pipeline.table import latent_array_masked, latent_field
from facebatch.stages.mix.outputs import pair_dir

if TYPE_CHECKING:
    from facebatch.stages.mix.config import MixConfig

SCORES = ("psnr_a", "psnr_b", "psnr_hole", "style_distance")


def manifest_schema(num_ws: int, w_dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("image_id", pa.string()),  # = pair_id (every facebatch table keys its rows by image_id)
            pa.field("pair_id", pa.string()),
            pa.field("app", pa.string()),
            pa.field("variant", pa.string()),  # spatial | layers 0-3 | t=0.25 | alpha 3-4 | offset | inpaint | style
            pa.field("a", pa.string()),
            pa.field("b", pa.string()),
            pa.field("neutral", pa.string()),
            pa.field("mask", pa.string()),  # shape name or file
            pa.field("mask_thresholded", pa.bool_()),  # the mask file was not black and white: cut at 0.5
            pa.field("t", pa.float64()),  # morph
            pa.field("params", pa.string()),  # JSON: the settings that made this row
            pa.field("projected", pa.bool_()),  # an optimisation ran for this pair (else codes from --latents)
            pa.field("path", pa.string()),  # result PNG, relative to OUT
            pa.field("input_path", pa.string()),
            pa.field("animation", pa.string()),  # morph
            *[pa.field(k, pa.float64()) for k in SCORES],
            pa.field("steps", pa.int32()),
            pa.field("seconds", pa.float64()),
            pa.field("status", pa.string()),
            pa.field("error", pa.string()),
            latent_field("w", (num_ws, w_dim)),
        ]
    )


def error_row(item: dict, message: str) -> dict:
    return {"item": item, "status": "error", "error": message}


def ok_row(pair, *, params: dict, **values) -> dict:
    return {
        "item": pair.item,
        "status": "ok",
        "error": None,
        "mask": pair.mask_label,
        "mask_thresholded": pair.thresholded,
        "params": json.dumps(params, sort_keys=True),
        **values,
    }


def table(cfg: MixConfig, rows: list[dict]) -> pa.Table:
    schema = manifest_schema(*cfg.latent_shape)
    shape = cfg.latent_shape
    n = len(rows)
    w = np.zeros((n, *shape), np.float32)
    ok = np.zeros(n, bool)
    for k, row in enumerate(rows):
        if row.get("w") is not None:
            w[k], ok[k] = row["w"], True

    def ref(row, name):
        side = row["item"].get(name)
        return side["ref"] if side else None

    cols = {
        "image_id": [r["item"]["image_id"] for r in rows],
        "pair_id": [r["item"]["image_id"] for r in rows],
        "app": [cfg.app] * n,
        "a": [ref(r, "a") for r in rows],
        "b": [ref(r, "b") for r in rows],
        "neutral": [ref(r, "neutral") for r in rows],
        "mask": [r.get("mask") or r["item"].get("mask") for r in rows],
    }
    arrays = []
    for fld in schema:
        if fld.name == "w":
            arrays.append(latent_array_masked(w, ok, shape))
        elif fld.name in cols:
            arrays.append(pa.array(cols[fld.name], fld.type))
        else:
            arrays.append(pa.array([_nan_to_none(r.get(fld.name)) for r in rows], fld.type))
    return pa.table(arrays, schema=schema)


def _nan_to_none(value):
    return None if isinstance(value, float) and not np.isfinite(value) else value


def read_manifest(out_dir: Path):
    """The manifest as a DataFrame (no latent column)."""
    from facebatch.pipeline.table import read_parts_frame

    names = [n for n in manifest_schema(1, 1).names if n != "w"]
    return read_parts_frame(RunDir(storage.location(out_dir), MANIFEST).parts(), names)


def write_contact_sheet(out_dir: Path, app: str, max_rows: int = 16) -> Path | None:
    """OUT/contact_sheets/<app>.png: one row per pair: A | B | (neutral) | (input) | its results."""
    from facebatch.pipeline.atomic import atomic_write_bytes
    from facebatch.sheets import edit_grid

    run = RunDir(storage.location(out_dir), MANIFEST)
    frame = read_manifest(out_dir)
    frame = frame[frame.status == "ok"]
    if frame.empty:
        return None
    pairs = list(dict.fromkeys(frame.pair_id))[:max_rows]
    inputs = [
        (label, name)
        for label, name in (("A", "a.png"), ("B", "b.png"), ("neutral", "neutral.png"), ("input", "input.png"))
        if any((run.root / pair_dir(app, p) / name).exists() for p in pairs)
    ]
    variants = list(dict.fromkeys(frame.variant))
    cells = []
    for p in pairs:
        rows = frame[frame.pair_id == p]
        by_variant = dict(zip(rows.variant, rows.path))
        row = [run.root / pair_dir(app, p) / name for _, name in inputs]
        row = [c if c.exists() else None for c in row]
        row += [run.root / by_variant[v] if v in by_variant else None for v in variants]
        cells.append(row)
    labels = [label for label, _ in inputs] + [v.replace("alpha ", "").replace("layers ", "L") for v in variants]
    title = f"mix {app}: {len(pairs)} pair{'s' if len(pairs) != 1 else ''}, labelled by pair id"
    path = run.folder(SHEETS) / f"{app}.png"
    atomic_write_bytes(path, edit_grid(title, labels, cells, row_labels=pairs))
    return path
