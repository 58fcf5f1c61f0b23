"""The `mix` stage: pairs of faces -> Image2StyleGAN(++) mixes and expression transfers, one or more rows per pair.

Apps (one per run): ``morph`` (frames between two W+ codes, noise maps too), ``crossover`` (a spatial
mask: A inside, B outside, blended by a masked projection; or ``layers``: the first k W+ rows from A, no
optimisation), ``inpaint`` (fill the pixels the mask marks unknown), ``style`` (B's texture inside a
region of A) and ``expression`` (Yang & Lim's per-layer alpha, an alpha sweep, or the neutral-pair
offset). The maths is `facebatch.edit.mixing`; this module reads pairs, masks and codes, calls it and
writes PNGs and rows.

One item is one pair, ``image_id`` = its ``pair_id``. Everything a pair writes lies under
``OUT/images/<app>/<pair_id>/``: ``a.png``, ``b.png`` (``neutral.png``) as the generator saw them,
``input.png`` (what the masked apps optimised towards: the cut-and-paste, the image with its hole, the
region to restyle), the results, and ``morph.gif``. Codes come from `--latents` runs (no projection) or
from projecting the images in the worker. Rows of one shard go through the mixing functions in batches.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from facebatch.checks import a_path, known_options
from facebatch.checks import items as several
from facebatch.errors import InputError
from facebatch.pipeline.rundir import IMAGES, SHEETS, RunDir
from facebatch.pipeline.runner import StageSpec
from facebatch.pipeline.shard_task import ShardInfo
from facebatch.pipeline.table import latent_array_masked, latent_field, reading_parquet
from facebatch.ranges import check_seeds, finite_number, parse_numbers, whole_number

log = logging.getLogger("facebatch.mix")

STAGE, TABLE = "mix", "manifest"
APPS = ("morph", "crossover", "inpaint", "style", "expression")
LATENT_APPS = ("morph", "expression")  # (and crossover --layers): codes in, no optimisation of the result
DEFAULT_MASKS = {"crossover": "left", "inpaint": "center", "style": "right"}
# The options of each app, by the command's names in Python spelling: any other is refused, not ignored.
APP_OPTIONS = {
    "morph": ("frames", "animation"),
    "crossover": ("mask", "layers"),
    "inpaint": ("mask",),
    "style": ("mask", "style_weight"),
    "expression": ("alpha_layers", "alpha", "alpha_sweep"),
}
# At 1.0 (the maths' default) the style term cost about 4 dB of the content outside the region in 40 steps on
# the fixture generator; 0.2 restyles the region visibly and keeps the rest (the tests' and bench's choice).
DEFAULT_STYLE_WEIGHT = 0.2
DEFAULT_FRAMES = 8
# A pair's frames are held at once (codes, noise maps, images for the animation): ~11 MB a frame at 1024 px.
MAX_FRAMES = 256
SCORES = ("psnr_a", "psnr_b", "psnr_hole", "style_distance")
THRESHOLD = 0.5
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")
MAX_ID = 80


# -- planning (client side) ---------------------------------------------------------------------------


def safe_pair_id(text: str) -> str:
    """A single path component: no separators, no leading dots (so never '..'), at most MAX_ID characters."""
    name = _UNSAFE.sub("_", text.strip()).lstrip(".")[:MAX_ID]
    return name or "pair"


def unique_ids(raw: Sequence[str]) -> list[str]:
    """Sanitised ids, made unique (case-insensitively: some file systems are) with -2, -3, ..."""
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
        source = open_latents(Path(path))
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
                names = pq.read_schema(f).names
                t = pq.read_table(f, columns=["image_id", "source_path"]) if "source_path" in names else None
            if t is not None:
                sources.update(zip(t.column("image_id").to_pylist(), t.column("source_path").to_pylist()))
        for n, image_id in enumerate(index.image_ids):
            if image_id in runs.where or not index.ok[n]:
                continue
            part = Path(index.files[index.file_of_row[n]])
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
    path = Path(ref).expanduser()
    return {"ref": ref, "path": str(path if path.is_absolute() else (base / path))}


def read_pairs(pairs_csv: Path, app: str, runs: LatentRuns | None = None) -> list[dict]:
    """PAIRS.csv -> items. Whole-file problems raise InputError; a bad cell becomes a per-pair error later."""
    pairs_csv = Path(pairs_csv)
    if not pairs_csv.is_file():
        raise InputError(f"no such pairs file: {pairs_csv}")
    try:
        with open(pairs_csv, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [(h or "").strip() for h in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read pairs file {pairs_csv}: {exc}") from None
    need = ["a"] if app == "inpaint" else ["a", "b"]
    missing = [c for c in need if c not in header]
    if missing:
        raise InputError(
            f"{pairs_csv} lacks column(s) {', '.join(missing)} (has: {', '.join(header) or 'no header'}); "
            f"{app} needs {', '.join(need)}" + (", optional mask" if app in DEFAULT_MASKS else "")
        )
    if not rows:
        raise InputError(f"{pairs_csv} has no pairs")
    rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items() if k is not None} for r in rows]
    base = pairs_csv.parent.resolve()

    def stem(ref: str) -> str:
        return Path(ref).stem if ref else "missing"

    raw_ids = [
        r.get("pair_id") or (stem(r["a"]) if app == "inpaint" else f"{stem(r['a'])}+{stem(r['b'])}") for r in rows
    ]
    items = []
    for line, (r, pair_id) in enumerate(zip(rows, unique_ids(raw_ids)), start=2):
        item = {
            "image_id": pair_id,
            "line": line,
            "a": _side(r["a"], base, runs),
            "b": _side(r.get("b", ""), base, runs) if app != "inpaint" else None,
            "neutral": _side(r.get("neutral", ""), base, runs) if app == "expression" else None,
            "mask": None,
        }
        mask = r.get("mask", "")
        if mask and app in DEFAULT_MASKS:
            from facebatch.edit.masks import SHAPES

            item["mask"] = mask if mask in SHAPES else str(Path(mask) if Path(mask).is_absolute() else base / mask)
        empty = [c for c in need if item[c] is None]
        if empty:
            item["error"] = f"line {line}: empty cell(s) {', '.join(empty)}"
        items.append(item)
    return items


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


def build_mix_spec(
    *,
    app: str,
    pairs_csv: Path,
    out_dir: Path,
    nets,
    projection: dict,
    params: dict,
    latents: Sequence[Path] = (),
    seed: int = 0,
    shard_size: int = 64,
    batch_size: int = 8,
) -> StageSpec:
    """Validate what a user can get wrong (before any work) and describe the run; `nets` is the client's load."""
    from facebatch.edit import mixing as mx
    from facebatch.edit.layers import parse_layers

    if app not in APPS:
        raise InputError(f"unknown mix app {app!r}; choose one of {', '.join(APPS)}")
    known_options(params, APP_OPTIONS[app], f"mix {app}")
    whole_number(shard_size, "--shard-size", lo=1)
    whole_number(batch_size, "--batch-size", lo=1)
    check_seeds([seed], "--seed")
    G = nets.G
    runs = open_runs(latents) if latents else None
    if runs is not None and runs.sha256 and runs.sha256 != nets.sha256:
        raise InputError(
            f"--latents {runs.paths[0]} was made with generator {runs.sha256[:12]}, --generator is "
            f"{nets.sha256[:12]}: codes only mean something in their own generator"
        )
    if runs is not None:
        shape = tuple(runs.index.shape)
        if shape != (G.num_ws, G.w_dim):
            raise InputError(f"--latents codes are {list(shape)}, the generator's W+ is {[G.num_ws, G.w_dim]}")
    params = dict(params)
    if app == "morph":
        whole_number(params.get("frames", DEFAULT_FRAMES), "--frames", lo=2, hi=MAX_FRAMES)  # both endpoints count
        if params.get("animation", "gif") not in ("gif", "webp", "none"):
            raise InputError("--animation must be gif, webp or none")
    if app in DEFAULT_MASKS:
        from facebatch.edit.masks import SHAPES

        params["mask"] = params.get("mask") or DEFAULT_MASKS[app]
        mask = params["mask"]
        a_path(mask, "--mask")  # a shape's name or a PNG's path
        if mask not in SHAPES:
            if not Path(mask).is_file():
                raise InputError(f"--mask {mask!r} is neither a shape ({', '.join(SHAPES)}) nor a mask file")
            params["mask"] = str(Path(mask).resolve())
    if app == "crossover" and params.get("layers") is not None:
        layers = params["layers"]
        k = int(layers) if str(layers).strip().isdigit() else None
        if k is not None and not 1 <= k <= G.num_ws:
            raise InputError(f"--layers {k}: the first k layers from A, k in 1-{G.num_ws} (the generator's W+ rows)")
        chosen = list(range(k)) if k is not None else parse_layers(layers, G.num_ws)
        params["layers"] = chosen
    if app == "style":
        if projection.get("perceptual") == "none":
            raise InputError("style transfer needs the perceptual network's features: not --set perceptual=none")
        finite_number(params.get("style_weight", DEFAULT_STYLE_WEIGHT), "--style-weight", lo=0)
    if app == "expression":
        alpha = params.get("alpha")
        if alpha is not None:
            if isinstance(alpha, str):
                values = parse_numbers(alpha, "--alpha", lo=0, hi=1)
            else:
                values = [finite_number(v, "--alpha", lo=0, hi=1) for v in several(alpha, "--alpha", "numbers")]
            params["alpha"] = mx.check_alpha(values, G.num_ws).tolist()
            params["alpha_layers"] = None
        else:
            spec = params.get("alpha_layers") or list(mx.DEFAULT_ALPHA_LAYERS)
            params["alpha_layers"] = [int(i) for i in np.flatnonzero(mx.parse_alpha_layers(spec, G.num_ws).numpy())]
    items = read_pairs(pairs_csv, app, runs)
    config = {
        "app": app,
        "params": params,
        "projection": projection,
        "seed": int(seed),
        "pairs": str(Path(pairs_csv).resolve()),
        "latents": runs.paths if runs else [],
        "generator": {"name": nets.name, "sha256": nets.sha256, "resolution": G.img_resolution},
        "latent_shape": [G.num_ws, G.w_dim],
    }
    return StageSpec(
        name=STAGE,
        out_dir=Path(out_dir),
        table=TABLE,
        items=items,
        shard_size=shard_size,
        config=config,
        setup=setup_mix,
        process=process_mix,
        runtime={
            "generator_path": str(Path(nets.path).resolve()),
            "generator_sha256": nets.sha256,
            "batch_size": int(batch_size),
        },
        schema=manifest_schema(G.num_ws, G.w_dim),
        score_columns=(*SCORES, "seconds"),
        side_dirs=(IMAGES, SHEETS),
        metadata={"generator_sha256": nets.sha256, "generator": nets.name},
        rows_per_item="many",
    )


# -- the worker ----------------------------------------------------------------------------------------


@dataclass
class MixState:
    G: Any
    projector: Any
    config: dict
    device: Any
    batch_size: int


def setup_mix(config: dict) -> MixState:
    from facebatch.invert.presets import ProjectionConfig
    from facebatch.invert.projector import Projector
    from facebatch.stages.common import worker_networks

    nets, device = worker_networks(config, with_d=False)
    projector = Projector(nets.G, None, config=ProjectionConfig(**config["projection"]), device=str(device))
    return MixState(nets.G.eval(), projector, config, device, int(config.get("batch_size", 8)))


@dataclass
class _Side:
    image: Any = None  # [3, R, R] as the generator sees it
    size: tuple[int, int] | None = None  # the file's (width, height)
    code: np.ndarray | None = None  # [num_ws, w_dim] from a --latents run
    noise: list[np.ndarray] | None = None


@dataclass
class _Pair:
    item: dict
    sides: dict[str, _Side]
    mask: Any = None  # [1, R, R]: A's region / known pixels (inpaint) / style region
    mask_label: str | None = None
    thresholded: bool | None = None
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def pair_seed(seed: int, pair_id: str) -> int:
    from facebatch.stages.project import per_image_seed

    return per_image_seed(seed, pair_id)


def _load_side(state: MixState, side: dict, need_image: bool) -> _Side:
    """A code from its run when the app wants codes and one exists; else the image (missing: UnreadableImage)."""
    from facebatch.pipeline.images import UnreadableImage, load_image
    from facebatch.pipeline.latents import read_rows
    from facebatch.pipeline.noise_store import read_noise

    R = state.G.img_resolution
    out = _Side()
    if "part" in side and not need_image:
        shape = tuple(state.config["latent_shape"])
        out.code = read_rows([Path(side["part"])], "w", shape, np.array([0]), np.array([side["row"]]))[0]
        if side.get("noise"):
            out.noise = read_noise(Path(side["noise"]), side["ref"])
        if side.get("source_path") and Path(side["source_path"]).is_file():
            try:
                out.image, meta = load_image(Path(side["source_path"]), R)
                out.size = (meta["orig_width"], meta["orig_height"])
            except UnreadableImage:
                pass  # only for the sheet: the code is what counts
        return out
    path = side.get("path") or side.get("source_path")
    if "part" in side and not path:
        raise InputError(f"{side['ref']}: its run records no source image, and {state.config['app']} needs pixels")
    if not Path(path).exists():
        what = "image file or image_id in the --latents run(s)" if state.config["latents"] else "image file"
        raise InputError(f"no such {what}: {side['ref']}")
    out.image, meta = load_image(Path(path), R)
    out.size = (meta["orig_width"], meta["orig_height"])
    return out


def _load_mask(state: MixState, pair: _Pair) -> None:
    import torch

    from facebatch.edit.masks import SHAPES, hole_mask, load_mask

    cfg = state.config
    R = state.G.img_resolution
    spec = pair.item.get("mask") or cfg["params"]["mask"]
    if spec in SHAPES:
        seed = pair_seed(cfg["seed"], pair.item["image_id"])
        region = hole_mask(spec, R, 1, seeds=[seed])[0]
        # A shape names the hole to fill for inpaint; the maths wants the known pixels there.
        pair.mask = 1 - region if cfg["app"] == "inpaint" else region
        pair.mask_label, pair.thresholded = spec, False
        return
    loaded = load_mask(spec, R, image_size=pair.sides["a"].size)
    pair.mask = loaded.mask.to(torch.float32)
    pair.mask_label, pair.thresholded = spec, loaded.thresholded


def _error_row(item: dict, message: str) -> dict:
    return {"item": item, "status": "error", "error": message}


def process_mix(state: MixState, items: list[dict], info: ShardInfo) -> pa.Table:
    from facebatch.pipeline.images import UnreadableImage

    cfg = state.config
    app = cfg["app"]
    latent_app = app in LATENT_APPS or (app == "crossover" and cfg["params"].get("layers") is not None)
    rows: list[dict] = []
    ready: list[_Pair] = []
    for item in items:
        if item.get("error"):
            rows.append(_error_row(item, item["error"]))
            continue
        start = time.perf_counter()
        try:
            sides = {
                name: _load_side(state, item[name], need_image=not latent_app)
                for name in ("a", "b", "neutral")
                if item.get(name)
            }
            pair = _Pair(item, sides)
            if app in DEFAULT_MASKS and not latent_app:
                _load_mask(state, pair)
        except (InputError, UnreadableImage, KeyError, OSError, ValueError) as exc:
            rows.append(_error_row(item, str(exc) or type(exc).__name__))
            continue
        pair.seconds = time.perf_counter() - start
        ready.append(pair)
    run = RunDir(Path(info.out_dir), TABLE)
    for start in range(0, len(ready), state.batch_size):
        chunk = ready[start : start + state.batch_size]
        began = time.perf_counter()
        try:
            if latent_app:
                _latent_batch(state, chunk, run)
            else:
                _projection_batch(state, chunk, run)
        except (InputError, OSError, ValueError) as exc:  # a bad batch is error rows; the shard goes on
            for pair in chunk:
                pair.rows = [_error_row(pair.item, f"{type(exc).__name__}: {exc}")]
        share = (time.perf_counter() - began) / len(chunk)
        for pair in chunk:
            for row in pair.rows:
                row.setdefault("seconds", pair.seconds + share)
            rows.extend(pair.rows)
    if str(state.device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
    return _table(cfg, rows)


def _pair_dir(app: str, pair_id: str) -> str:
    return f"{IMAGES}/{app}/{pair_id}"


def _save(run: RunDir, rel: str, image) -> str:
    from facebatch.pipeline.images import save_image

    save_image(image.clamp(-1, 1), run.root / rel)
    return rel


def _save_inputs(run: RunDir, app: str, pair: _Pair, renders: dict | None = None) -> None:
    """a.png, b.png (neutral.png) as the generator saw them (or the code's render when no image exists)."""
    folder = _pair_dir(app, pair.item["image_id"])
    for name, side in pair.sides.items():
        image = side.image if side.image is not None else (renders or {}).get(name)
        if image is not None:
            _save(run, f"{folder}/{name}.png", image)


def psnr(a, b, mask=None) -> np.ndarray:
    """PSNR in dB ([-1, 1] images, clamped) over the pixels where mask is 1, per image; NaN for an empty mask."""
    import torch

    a, b = a.float().clamp(-1, 1), b.float().clamp(-1, 1)
    mask = torch.ones_like(a[:, :1]) if mask is None else mask.float()
    area = 3 * mask.sum(dim=(1, 2, 3))
    se = ((a - b).square() * mask).sum(dim=(1, 2, 3)) / area.clamp_min(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10 * np.log10(4 / se.double().numpy())
    out[area.numpy() == 0] = np.nan
    return out


def _projection_batch(state: MixState, chunk: list[_Pair], run: RunDir) -> None:
    import torch

    from facebatch.edit import mixing as mx

    cfg = state.config
    app, params = cfg["app"], cfg["params"]
    proj = state.projector
    seeds = [pair_seed(cfg["seed"], p.item["image_id"]) for p in chunk]
    A = torch.stack([p.sides["a"].image for p in chunk])
    M = torch.stack([p.mask for p in chunk])
    scores: dict[str, np.ndarray] = {}
    if app == "crossover":
        B = torch.stack([p.sides["b"].image for p in chunk])
        res = mx.crossover(proj, A, B, M, seeds)
        result, view = res.images, res.composite
        scores = {"psnr_a": psnr(result, A, M), "psnr_b": psnr(result, B, 1 - M)}
        variant, extra = "spatial", {}
    elif app == "inpaint":
        res = mx.inpaint(proj, A, M, seeds)
        result, view = res.composite, A * M  # the hole shows as mid-grey
        scores = {"psnr_a": psnr(res.images, A, M), "psnr_hole": psnr(res.images, A, 1 - M)}
        variant, extra = "inpaint", {}
    else:  # style
        B = torch.stack([p.sides["b"].image for p in chunk])
        weight = float(params.get("style_weight", DEFAULT_STYLE_WEIGHT))
        res = mx.style_transfer(proj, A, B, M, seeds, style_weight=weight)
        result, view = res.images, A * (1 - M)
        scores = {"psnr_a": psnr(result, A, 1 - M), "style_distance": mx.style_distance(proj, result, B, M).numpy()}
        variant, extra = "style", {"style_weight": weight}
    for j, pair in enumerate(chunk):
        pid = pair.item["image_id"]
        folder = _pair_dir(app, pid)
        _save_inputs(run, app, pair)
        input_rel = _save(run, f"{folder}/input.png", view[j])
        rel = _save(run, f"{folder}/result.png", result[j])
        if app == "inpaint":
            _save(run, f"{folder}/render.png", res.images[j])  # the generator's whole image, hole and all
        pair.rows = [
            _ok_row(
                pair,
                variant=variant,
                path=rel,
                input_path=input_rel,
                w=res.ws[j].numpy(),
                projected=True,
                steps=res.projection.steps,
                params={"mask": pair.mask_label, "seed": seeds[j], **extra},
                **{k: float(v[j]) for k, v in scores.items()},
            )
        ]


def _codes(state: MixState, chunk: list[_Pair]) -> dict[tuple[int, str], tuple[Any, Any, dict]]:
    """(pair index, side) -> (code [num_ws, w_dim] tensor, noise maps or None, scores) for every side of the chunk:
    from the --latents run, else one projection of every image that has no code (W+ and noise per the preset)."""
    import torch

    cfg = state.config
    found, todo = {}, []
    for i, pair in enumerate(chunk):
        for name, side in pair.sides.items():
            if side.code is not None:
                noise = [torch.from_numpy(np.asarray(n)) for n in side.noise] if side.noise else None
                found[(i, name)] = (torch.from_numpy(side.code), noise, {})
            else:
                todo.append((i, name))
    if todo:
        from facebatch.stages.project import per_image_seed

        # An image named by several pairs of the batch is projected once (its seed derives from its name).
        refs = list(dict.fromkeys(chunk[i].item[name]["ref"] for i, name in todo))
        first = {}
        for i, name in todo:
            first.setdefault(chunk[i].item[name]["ref"], (i, name))
        targets = torch.stack([chunk[i].sides[name].image for i, name in (first[r] for r in refs)])
        res = state.projector.project(targets, [per_image_seed(cfg["seed"], r) for r in refs])
        quality = psnr(res.reconstructions, targets)
        for i, name in todo:
            k = refs.index(chunk[i].item[name]["ref"])
            noise = [n[k] for n in res.noise] if res.noise is not None else None
            found[(i, name)] = (res.ws[k], noise, {"psnr": float(quality[k]), "steps": res.steps})
    return found


def _render(state: MixState, ws, noise):
    from facebatch.edit import mixing as mx

    return mx.render(state.G, ws, noise, noise_mode=state.projector.config.noise_mode)


def _latent_batch(state: MixState, chunk: list[_Pair], run: RunDir) -> None:
    import torch

    from facebatch.edit import mixing as mx
    from facebatch.edit.layers import format_layers

    cfg = state.config
    app, params = cfg["app"], cfg["params"]
    codes = _codes(state, chunk)
    for i, pair in enumerate(chunk):
        pid = pair.item["image_id"]
        folder = _pair_dir(app, pid)
        (wa, na, sa), (wb, nb, sb) = codes[(i, "a")], codes[(i, "b")]
        projected = bool(sa or sb)
        both_noise = na is not None and nb is not None
        common = {
            "projected": projected,
            "psnr_a": sa.get("psnr"),
            "psnr_b": sb.get("psnr"),
            "steps": sa.get("steps") or sb.get("steps"),
        }
        renders = {}
        missing = [n for n, s in pair.sides.items() if s.image is None]
        for name in missing:
            w, nz, _ = codes[(i, name)]
            renders[name] = _render(state, w[None], [m[None] for m in nz] if nz else None)[0]
        _save_inputs(run, app, pair, renders)
        rows = []
        if app == "morph":
            frames = int(params.get("frames", DEFAULT_FRAMES))
            ends = ([n[None] for n in na], [n[None] for n in nb]) if both_noise else (None, None)
            ws, noise = mx.morph(wa[None], wb[None], frames, *ends)
            images = _render(state, ws[0], [n[0] for n in noise] if noise else None)
            ts = torch.linspace(0.0, 1.0, frames).tolist()
            anim = _animation(run, folder, images, params.get("animation", "gif"))
            for k, t in enumerate(ts):
                rel = _save(run, f"{folder}/frame-{k:03d}.png", images[k])
                rows.append(
                    _ok_row(
                        pair,
                        variant=f"t={t:.2f}",
                        t=t,
                        path=rel,
                        animation=anim,
                        w=ws[0, k].numpy(),
                        params={"frames": frames, "noise": "interpolated" if both_noise else "const"},
                        **common,
                    )
                )
        elif app == "crossover":
            layers = params["layers"]
            w = mx.layer_crossover(wa[None], wb[None], layers)
            label = f"layers {format_layers(layers)}" if layers else "layers none"
            image = _render(state, w, [n[None] for n in nb] if nb is not None else None)[0]
            rel = _save(run, f"{folder}/{_file_label(label)}.png", image)
            rows.append(
                _ok_row(
                    pair,
                    variant=label,
                    path=rel,
                    w=w[0].numpy(),
                    params={"layers": layers, "noise": "b" if nb is not None else "const"},
                    **common,
                )
            )
        else:  # expression
            noise = [n[None] for n in na] if na is not None else None
            if "neutral" in pair.sides:
                wn, _, sn = codes[(i, "neutral")]
                common["projected"] = projected or bool(sn)
                variants = [("offset", mx.expression_offset(wa[None], wb[None], wn[None]), {"strength": 1.0})]
            elif params.get("alpha_sweep"):
                labels, alphas = mx.alpha_sweep(wa.shape[0])
                swept = mx.expression_sweep(wa[None], wb[None], alphas)
                variants = [(f"alpha {lab}", swept[:, k], {"alpha_layers": lab}) for k, lab in enumerate(labels)]
            elif params.get("alpha") is not None:
                w = mx.expression_transfer(wa[None], wb[None], torch.tensor(params["alpha"]))
                variants = [("alpha custom", w, {"alpha": params["alpha"]})]
            else:
                lab = format_layers(params["alpha_layers"])
                w = mx.expression_transfer(wa[None], wb[None], lab)
                variants = [(f"alpha {lab}", w, {"alpha_layers": lab})]
            for label, w, extra in variants:
                image = _render(state, w, noise)[0]
                rel = _save(run, f"{folder}/{_file_label(label)}.png", image)
                rows.append(
                    _ok_row(
                        pair,
                        variant=label,
                        path=rel,
                        w=w[0].numpy(),
                        params={**extra, "noise": "a" if noise else "const"},
                        **common,
                    )
                )
        pair.rows = rows


def _file_label(label: str) -> str:
    return safe_pair_id(label.replace(" ", "-").replace(",", "_"))


def _animation(run: RunDir, folder: str, images, kind: str) -> str | None:
    """morph.gif / morph.webp: forward then back, looping; written atomically."""
    from facebatch.pipeline.atomic import atomic_write_bytes
    from facebatch.pipeline.images import tensor_to_pil

    if kind == "none":
        return None
    frames = [tensor_to_pil(img.clamp(-1, 1)) for img in images]
    frames = frames + frames[-2:0:-1]
    buf = io.BytesIO()
    frames[0].save(buf, format=kind.upper(), save_all=True, append_images=frames[1:], duration=100, loop=0)
    rel = f"{folder}/morph.{kind}"
    atomic_write_bytes(run.root / rel, buf.getvalue())
    return rel


def _ok_row(pair: _Pair, *, params: dict, **values) -> dict:
    return {
        "item": pair.item,
        "status": "ok",
        "error": None,
        "mask": pair.mask_label,
        "mask_thresholded": pair.thresholded,
        "params": json.dumps(params, sort_keys=True),
        **values,
    }


def _table(cfg: dict, rows: list[dict]) -> pa.Table:
    schema = manifest_schema(*cfg["latent_shape"])
    shape = tuple(cfg["latent_shape"])
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
        "app": [cfg["app"]] * n,
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


# -- after the run ---------------------------------------------------------------------------------------


def read_manifest(out_dir: Path):
    """The manifest as a DataFrame (no latent column)."""
    from facebatch.pipeline.table import read_parts_frame

    names = [n for n in manifest_schema(1, 1).names if n != "w"]
    return read_parts_frame(RunDir(Path(out_dir), TABLE).parts(), names)


def write_contact_sheet(out_dir: Path, app: str, max_rows: int = 16) -> Path | None:
    """OUT/contact_sheets/<app>.png: one row per pair: A | B | (neutral) | (input) | its results."""
    from facebatch.pipeline.atomic import atomic_write_bytes
    from facebatch.sheets import edit_grid

    run = RunDir(Path(out_dir), TABLE)
    frame = read_manifest(out_dir)
    frame = frame[frame.status == "ok"]
    if frame.empty:
        return None
    pairs = list(dict.fromkeys(frame.pair_id))[:max_rows]
    inputs = [
        (label, name)
        for label, name in (("A", "a.png"), ("B", "b.png"), ("neutral", "neutral.png"), ("input", "input.png"))
        if any((run.root / _pair_dir(app, p) / name).exists() for p in pairs)
    ]
    variants = list(dict.fromkeys(frame.variant))
    cells = []
    for p in pairs:
        rows = frame[frame.pair_id == p]
        by_variant = dict(zip(rows.variant, rows.path))
        row = [run.root / _pair_dir(app, p) / name for _, name in inputs]
        row = [c if c.exists() else None for c in row]
        row += [run.root / by_variant[v] if v in by_variant else None for v in variants]
        cells.append(row)
    labels = [label for label, _ in inputs] + [v.replace("alpha ", "").replace("layers ", "L") for v in variants]
    title = f"mix {app}: {len(pairs)} pair{'s' if len(pairs) != 1 else ''}, labelled by pair id"
    path = run.folder(SHEETS) / f"{app}.png"
    atomic_write_bytes(path, edit_grid(title, labels, cells, row_labels=pairs))
    return path
