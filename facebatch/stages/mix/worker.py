"""The mix stage on a worker: load each pair (images or codes, a mask), run its app, write files and rows.

One item is one pair, ``image_id`` = its ``pair_id``. Everything a pair writes lies under
``OUT/images/<app>/<pair_id>/``: ``a.png``, ``b.png`` (``neutral.png``) as the generator saw them,
``input.png`` (what the masked apps optimised towards), the results, and ``morph.gif``. Codes come from
`--latents` runs (no projection) or from projecting the images here. Pairs go through their app in batches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.records import WorkerSetup
from facebatch.pipeline.rundir import MANIFEST, RunDir
from facebatch.pipeline.shard_task import ShardInfo
from facebatch.stages.common import per_image_seed
from facebatch.stages.mix.apps import APPS, App, CodesOfPair
from facebatch.stages.mix.manifest import error_row, ok_row, table
from facebatch.stages.mix.outputs import pair_dir, render_codes, save, save_inputs

if TYPE_CHECKING:
    from facebatch.stages.mix.config import MixConfig, MixRuntime


@dataclass
class MixState:
    G: Any
    projector: Any
    config: MixConfig
    device: Any
    batch_size: int


def setup_mix(setup: WorkerSetup[MixConfig, MixRuntime]) -> MixState:
    from facebatch.invert.projector import Projector
    from facebatch.stages.common import worker_networks

    cfg, rt = setup.config, setup.runtime
    nets, device = worker_networks(setup, rt.generator_path, rt.generator_sha256, with_d=False)
    projector = Projector(nets.G, None, config=cfg.projection, device=str(device))
    return MixState(nets.G.eval(), projector, cfg, device, rt.batch_size)


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
    return per_image_seed(seed, pair_id)


def _load_side(state: MixState, side: dict, need_image: bool) -> _Side:
    """A code from its run when the app wants codes and one exists; else the image (missing: UnreadableImage)."""
    from facebatch.pipeline.images import UnreadableImage, load_image
    from facebatch.pipeline.latents import read_rows
    from facebatch.pipeline.noise_store import read_noise

    R = state.G.img_resolution
    out = _Side()
    if "part" in side and not need_image:
        shape = state.config.latent_shape
        out.code = read_rows([storage.location(side["part"])], "w", shape, np.array([0]), np.array([side["row"]]))[0]
        if side.get("noise"):
            out.noise = read_noise(storage.location(side["noise"]), side["ref"])
        if side.get("source_path") and storage.location(side["source_path"]).is_file():
            try:
                out.image, meta = load_image(storage.location(side["source_path"]), R)
                out.size = (meta["orig_width"], meta["orig_height"])
            except UnreadableImage:
                pass  # only for the sheet: the code is what counts
        return out
    path = side.get("path") or side.get("source_path")
    if "part" in side and not path:
        raise InputError(f"{side['ref']}: its run records no source image, and {state.config.app} needs pixels")
    if not storage.location(path).exists():
        what = "image file or image_id in the --latents run(s)" if state.config.latents else "image file"
        raise InputError(f"no such {what}: {side['ref']}")
    out.image, meta = load_image(storage.location(path), R)
    out.size = (meta["orig_width"], meta["orig_height"])
    return out


def _load_mask(state: MixState, pair: _Pair) -> None:
    import torch

    from facebatch.edit.masks import SHAPES, hole_mask, load_mask

    cfg = state.config
    R = state.G.img_resolution
    spec = pair.item.get("mask") or cfg.params.mask
    if spec in SHAPES:
        seed = pair_seed(cfg.seed, pair.item["image_id"])
        region = hole_mask(spec, R, 1, seeds=[seed])[0]
        # A shape names the hole to fill for inpaint; the maths wants the known pixels there.
        pair.mask = 1 - region if APPS[cfg.app].mask_names_the_hole else region
        pair.mask_label, pair.thresholded = spec, False
        return
    loaded = load_mask(spec, R, image_size=pair.sides["a"].size)
    pair.mask = loaded.mask.to(torch.float32)
    pair.mask_label, pair.thresholded = spec, loaded.thresholded


def process_mix(state: MixState, items: list[dict], info: ShardInfo) -> pa.Table:
    from facebatch.pipeline.images import UnreadableImage

    cfg = state.config
    app = APPS[cfg.app]
    latent_app = app.combines_codes(cfg.params)
    rows: list[dict] = []
    ready: list[_Pair] = []
    for item in items:
        if item.get("error"):
            rows.append(error_row(item, item["error"]))
            continue
        start = time.perf_counter()
        try:
            sides = {
                name: _load_side(state, item[name], need_image=not latent_app)
                for name in ("a", "b", "neutral")
                if item.get(name)
            }
            pair = _Pair(item, sides)
            if app.default_mask and not latent_app:
                _load_mask(state, pair)
        except (InputError, UnreadableImage, KeyError, OSError, ValueError) as exc:
            rows.append(error_row(item, str(exc) or type(exc).__name__))
            continue
        pair.seconds = time.perf_counter() - start
        ready.append(pair)
    run = RunDir(storage.location(info.out_dir), MANIFEST)
    for start in range(0, len(ready), state.batch_size):
        chunk = ready[start : start + state.batch_size]
        began = time.perf_counter()
        try:
            if latent_app:
                _combine_codes(state, app, chunk, run)
            else:
                _project(state, app, chunk, run)
        except (InputError, OSError, ValueError) as exc:  # a bad batch is error rows; the shard goes on
            for pair in chunk:
                pair.rows = [error_row(pair.item, f"{type(exc).__name__}: {exc}")]
        share = (time.perf_counter() - began) / len(chunk)
        for pair in chunk:
            for row in pair.rows:
                row.setdefault("seconds", pair.seconds + share)
            rows.extend(pair.rows)
    if str(state.device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
    return table(cfg, rows)


def _codes(state: MixState, chunk: list[_Pair]) -> dict[tuple[int, str], tuple[Any, Any, dict]]:
    """(pair index, side) -> (code [num_ws, w_dim] tensor, noise maps or None, scores) for every side of the chunk:
    from the --latents run, else one projection of every image that has no code (W+ and noise per the preset)."""
    import torch

    from facebatch.invert.scores import psnr

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
        # An image named by several pairs of the batch is projected once (its seed derives from its name).
        refs = list(dict.fromkeys(chunk[i].item[name]["ref"] for i, name in todo))
        first = {}
        for i, name in todo:
            first.setdefault(chunk[i].item[name]["ref"], (i, name))
        targets = torch.stack([chunk[i].sides[name].image for i, name in (first[r] for r in refs)])
        res = state.projector.project(targets, [per_image_seed(cfg.seed, r) for r in refs])
        quality = psnr(res.reconstructions, targets)
        for i, name in todo:
            k = refs.index(chunk[i].item[name]["ref"])
            noise = [n[k] for n in res.noise] if res.noise is not None else None
            found[(i, name)] = (res.ws[k], noise, {"psnr": float(quality[k]), "steps": res.steps})
    return found


def _project(state: MixState, app: App, chunk: list[_Pair], run: RunDir) -> None:
    """One masked projection of the whole batch; one row per pair."""
    import torch

    cfg = state.config
    seeds = [pair_seed(cfg.seed, p.item["image_id"]) for p in chunk]
    A = torch.stack([p.sides["a"].image for p in chunk])
    B = torch.stack([p.sides["b"].image for p in chunk]) if "b" in app.columns else None
    M = torch.stack([p.mask for p in chunk])
    made = app.project(state.projector, A, B, M, seeds, cfg.params)
    for j, pair in enumerate(chunk):
        folder = pair_dir(app.name, pair.item["image_id"])
        save_inputs(run, app.name, pair)
        input_rel = save(run, f"{folder}/input.png", made.view[j])
        rel = save(run, f"{folder}/result.png", made.result[j])
        if made.render is not None:
            save(run, f"{folder}/render.png", made.render[j])
        pair.rows = [
            ok_row(
                pair,
                variant=made.variant,
                path=rel,
                input_path=input_rel,
                w=made.ws[j].numpy(),
                projected=True,
                steps=made.steps,
                params={"mask": pair.mask_label, "seed": seeds[j], **made.extra},
                **{k: float(v[j]) for k, v in made.scores.items()},
            )
        ]


def _combine_codes(state: MixState, app: App, chunk: list[_Pair], run: RunDir) -> None:
    """Every side's code (from its run, or projected once here), the inputs saved, then the app's rows."""
    codes = _codes(state, chunk)
    for i, pair in enumerate(chunk):
        folder = pair_dir(app.name, pair.item["image_id"])
        (_, _, sa), (_, _, sb) = codes[(i, "a")], codes[(i, "b")]
        common = {
            "projected": bool(sa or sb),
            "psnr_a": sa.get("psnr"),
            "psnr_b": sb.get("psnr"),
            "steps": sa.get("steps") or sb.get("steps"),
        }
        renders = {}
        for name in [n for n, s in pair.sides.items() if s.image is None]:
            w, nz, _ = codes[(i, name)]
            renders[name] = render_codes(state, w[None], [m[None] for m in nz] if nz else None)[0]
        save_inputs(run, app.name, pair, renders)
        mine = {name: codes[(i, name)] for name in pair.sides}
        pair.rows = app.from_codes(CodesOfPair(state, run, pair, folder, state.config.params, mine, common))
