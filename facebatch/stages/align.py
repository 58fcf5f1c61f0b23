"""The `align` stage: images -> FFHQ-aligned PNGs + one row per face.

Rows: the face's box, detection score, 68 landmarks and crop quad (all in the upright source image's
pixels, so an edit of the aligned face can be pasted back), the aligned PNG's path relative to OUT,
status and error. An image with no face, or that cannot be decoded, is one error row.
PNGs go to OUT/aligned/<image_id>.png (the largest face) and <image_id>.face<k>.png for the further
faces of --faces all, by decreasing size: the full image_id keeps a.jpg and a.png apart.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from facebatch.alignment.api import FACE_MODES, NoFaceFound, detect_and_align
from facebatch.alignment.ffhq import TRANSFORM_OVERSAMPLE
from facebatch.alignment.landmarks import check_name, get_backend
from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.atomic import atomic_write_bytes
from facebatch.pipeline.images import UnreadableImage, decode, read_bytes
from facebatch.pipeline.records import JsonRecord, WorkerSetup
from facebatch.pipeline.rundir import ALIGNED, FACES
from facebatch.pipeline.runner import StageSpec
from facebatch.pipeline.shard_task import ShardInfo
from facebatch.pipeline.table import latent_array_masked, latent_field

STAGE, TABLE = "align", FACES
_SCALARS = (
    "image_id",
    "face_index",
    "source_path",
    "file_sha256",
    "orig_width",
    "orig_height",
    "aligned_path",
    "score",
    "status",
    "error",
    "seconds",
)
_ARRAYS = {"box": (4,), "landmarks": (68, 2), "quad": (4, 2)}


def align_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("image_id", pa.string()),
            pa.field("face_index", pa.int32()),
            pa.field("source_path", pa.string()),
            pa.field("file_sha256", pa.string()),
            pa.field("orig_width", pa.int32()),
            pa.field("orig_height", pa.int32()),
            pa.field("aligned_path", pa.string()),  # relative to OUT
            latent_field("box", _ARRAYS["box"]),
            pa.field("score", pa.float64()),
            latent_field("landmarks", _ARRAYS["landmarks"]),
            latent_field("quad", _ARRAYS["quad"]),
            pa.field("status", pa.string()),
            pa.field("error", pa.string()),
            pa.field("seconds", pa.float64()),
        ]
    )


def aligned_name(image_id: str, face_index: int) -> str:
    return f"{ALIGNED}/{image_id}.png" if face_index == 0 else f"{ALIGNED}/{image_id}.face{face_index}.png"


@dataclass(frozen=True)
class AlignRecipe(JsonRecord):
    """How a face is cut out (recorded: another recipe is another run)."""

    name: str = "ffhq"
    transform_oversample: int = TRANSFORM_OVERSAMPLE  # the FFHQ warp's supersampling factor
    pad: bool = True  # reflect-pad and blur beyond the image's edges, as FFHQ did


@dataclass(frozen=True)
class AlignConfig(JsonRecord):
    """What decides an align run's rows (hashed: other values are another run)."""

    size: int  # side of the aligned square in pixels
    backend: str  # landmark backend
    faces: str  # largest | all
    min_score: float  # detection score threshold
    recipe: AlignRecipe = AlignRecipe()


@dataclass(frozen=True)
class AlignRuntime(JsonRecord):
    """Nothing but the config reaches an align worker."""


def build_align_spec(
    *, items: list[dict], out_dir: Path, size: int, backend: str, faces: str, min_score: float | None, shard_size: int
) -> StageSpec:
    if faces not in FACE_MODES:
        raise InputError(f"--faces must be one of {', '.join(FACE_MODES)}, not {faces!r}")
    if size < 1:
        raise InputError(f"--size must be a positive number of pixels, not {size}")
    rows_per_item = "many" if faces == "all" else "one"
    threshold = get_backend(check_name(backend)).default_min_score if min_score is None else float(min_score)
    config = AlignConfig(size=int(size), backend=backend, faces=faces, min_score=threshold)
    return StageSpec(
        name=STAGE,
        out_dir=storage.location(out_dir),
        table=TABLE,
        items=items,
        shard_size=shard_size,
        config=config,
        setup=setup_align,
        process=process_align,
        runtime=AlignRuntime(),
        schema=align_schema(),
        score_columns=("score", "seconds"),
        side_dirs=(ALIGNED,),
        rows_per_item=rows_per_item,
    )


@dataclass
class AlignState:
    size: int
    backend: str
    faces: str
    min_score: float


def setup_align(setup: WorkerSetup[AlignConfig, AlignRuntime]) -> AlignState:
    cfg = setup.config
    get_backend(cfg.backend)  # load the landmark model once per worker process, before the first image
    return AlignState(cfg.size, cfg.backend, cfg.faces, cfg.min_score)


def process_align(state: AlignState, items: list[dict], info: ShardInfo) -> pa.Table:
    rows: list[dict] = []
    for item in items:
        rows.extend(_align_item(state, item, info.out_dir))
    return _table(rows)


def _align_item(state: AlignState, item: dict, out_dir: Path) -> list[dict]:
    start = time.perf_counter()
    base = {"image_id": item["image_id"], "source_path": str(item["path"])}
    try:
        data = read_bytes(item["path"])
        base["file_sha256"] = hashlib.sha256(data).hexdigest()
        image, (base["orig_width"], base["orig_height"]) = decode(data)
        faces = detect_and_align(image, state.size, state.backend, state.faces, state.min_score)
    except (UnreadableImage, NoFaceFound) as exc:
        return [{**base, "status": "error", "error": str(exc), "seconds": time.perf_counter() - start}]
    rows = []
    for face in faces:
        rel = aligned_name(item["image_id"], face.face_index)
        buf = io.BytesIO()
        face.image.save(buf, format="PNG")
        atomic_write_bytes(storage.location(out_dir) / rel, buf.getvalue())
        rows.append(
            {
                **base,
                "face_index": face.face_index,
                "aligned_path": rel,
                "box": face.box,
                "score": face.score,
                "landmarks": face.landmarks,
                "quad": face.quad,
                "status": "ok",
                "error": None,
            }
        )
    seconds = (time.perf_counter() - start) / len(rows)
    return [{**row, "seconds": seconds} for row in rows]


def _table(rows: list[dict]) -> pa.Table:
    schema = align_schema()
    ok = np.array([r["status"] == "ok" for r in rows], dtype=bool)
    columns = {name: pa.array([r.get(name) for r in rows], schema.field(name).type) for name in _SCALARS}
    for name, shape in _ARRAYS.items():
        values = np.stack([r[name] if name in r else np.zeros(shape) for r in rows]) if rows else np.zeros((0, *shape))
        columns[name] = latent_array_masked(values, ok, shape)
    return pa.table([columns[f.name] for f in schema], schema=schema)
