"""The five mix apps as a table: what each takes (its options record, PAIRS.csv columns, a mask), how its
options are checked on the client, and what it computes on a worker. The stage (`worker.py`) loads pairs,
codes and masks, calls an app's `project` (apps that optimise a masked projection) or `from_codes` (apps that
only combine codes), and writes what it returns; a new app is one entry here (and its record in params.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from facebatch.checks import a_path
from facebatch.checks import items as several
from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.ranges import finite_number, parse_numbers, whole_number
from facebatch.stages.mix.manifest import ok_row
from facebatch.stages.mix.outputs import animation, file_label, render_codes, save
from facebatch.stages.mix.params import (
    DEFAULT_FRAMES,
    DEFAULT_STYLE_WEIGHT,
    AppParams,
    CrossoverParams,
    ExpressionParams,
    MaskedParams,
    MorphParams,
    StyleParams,
)

if TYPE_CHECKING:
    from facebatch.invert.presets import ProjectionConfig

# A pair's frames are held at once (codes, noise maps, images for the animation): ~11 MB a frame at 1024 px.
MAX_FRAMES = 256


@dataclass
class Projected:
    """What a projection app made for a batch of pairs; the stage saves it and writes one row per pair."""

    result: Any  # [N, 3, R, R]: result.png
    view: Any  # input.png: what the optimisation aimed at (the cut-and-paste, the image with its hole, ...)
    scores: dict[str, np.ndarray]
    variant: str
    extra: dict  # the row's params beyond mask and seed
    ws: Any
    steps: int
    render: Any = None  # inpaint: the generator's whole image (hole and all), render.png


@dataclass
class CodesOfPair:
    """One pair's codes for an app that combines codes: per side (w [num_ws, w_dim], noise maps or None, the
    side's projection scores when it was projected here), and what every row of the pair shares."""

    state: Any
    run: Any
    pair: Any
    folder: str
    params: AppParams
    codes: dict[str, tuple[Any, Any, dict]]
    common: dict = field(default_factory=dict)

    def row(self, **values) -> dict:
        return ok_row(self.pair, **values, **self.common)


@dataclass(frozen=True)
class App:
    name: str
    params: type[AppParams]  # the record of its own options: their names, defaults and what a run records
    columns: tuple[str, ...] = ("a", "b")  # PAIRS.csv columns it needs
    default_mask: str | None = None  # set for the apps that take a mask
    mask_names_the_hole: bool = False  # inpaint: a shape names the hole, the maths wants the known pixels
    takes_neutral: bool = False  # expression: an optional neutral column
    # Client side, in place on the options dict the caller gave (fills in defaults, normalises): the dict it
    # leaves is read as the app's record and is that record's JSON, as runs have always recorded it.
    check: Callable[[dict, Any, ProjectionConfig], None] = lambda params, G, projection: None
    project: Callable[..., Projected] | None = None  # (projector, A, B, M, seeds, params) -> Projected
    from_codes: Callable[[CodesOfPair], list[dict]] | None = None  # -> the pair's rows

    @property
    def options(self) -> tuple[str, ...]:
        """The app's own options, by the command's names in Python spelling."""
        return self.params.options()

    def checked_params(self, given: Mapping[str, Any], G, projection: ProjectionConfig) -> AppParams:
        """The caller's options (all of them this app's) checked, completed and read as the app's record."""
        values = dict(given)
        self.check(values, G, projection)
        return self.params.from_json(values)  # the checked dict is what the run records

    def combines_codes(self, params: AppParams) -> bool:
        """Codes in, no optimisation of the result (crossover does so only with --layers)."""
        return self.from_codes is not None and (self.project is None or params.combines_codes_only)


# -- client-side checks ---------------------------------------------------------------------------------


def _check_mask(app: str) -> Callable[[dict, Any, ProjectionConfig], None]:
    def check(params: dict, G, projection: ProjectionConfig) -> None:
        from facebatch.edit.masks import SHAPES

        params["mask"] = params.get("mask") or APPS[app].default_mask
        mask = params["mask"]
        a_path(mask, "--mask")  # a shape's name or a PNG's path
        if mask not in SHAPES:
            if not storage.location(mask, "--mask").is_file():
                raise InputError(f"--mask {mask!r} is neither a shape ({', '.join(SHAPES)}) nor a mask file")
            params["mask"] = storage.resolved(mask)

    return check


def _check_morph(params: dict, G, projection: ProjectionConfig) -> None:
    whole_number(params.get("frames", DEFAULT_FRAMES), "--frames", lo=2, hi=MAX_FRAMES)  # both endpoints count
    if params.get("animation", "gif") not in ("gif", "webp", "none"):
        raise InputError("--animation must be gif, webp or none")


def _check_crossover(params: dict, G, projection: ProjectionConfig) -> None:
    from facebatch.edit.layers import parse_layers

    _check_mask("crossover")(params, G, projection)
    if params.get("layers") is not None:
        layers = params["layers"]
        k = int(layers) if str(layers).strip().isdigit() else None
        if k is not None and not 1 <= k <= G.num_ws:
            raise InputError(f"--layers {k}: the first k layers from A, k in 1-{G.num_ws} (the generator's W+ rows)")
        params["layers"] = list(range(k)) if k is not None else parse_layers(layers, G.num_ws)


def _check_style(params: dict, G, projection: ProjectionConfig) -> None:
    _check_mask("style")(params, G, projection)
    if projection.perceptual == "none":
        raise InputError("style transfer needs the perceptual network's features: not --set perceptual=none")
    finite_number(params.get("style_weight", DEFAULT_STYLE_WEIGHT), "--style-weight", lo=0)


def _check_expression(params: dict, G, projection: ProjectionConfig) -> None:
    from facebatch.edit import mixing as mx

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


# -- apps that optimise a masked projection (worker side) -----------------------------------------------


def _crossover_projected(proj, A, B, M, seeds, params) -> Projected:
    from facebatch.edit import mixing as mx
    from facebatch.invert.scores import psnr

    res = mx.crossover(proj, A, B, M, seeds)
    scores = {"psnr_a": psnr(res.images, A, M), "psnr_b": psnr(res.images, B, 1 - M)}
    return Projected(res.images, res.composite, scores, "spatial", {}, res.ws, res.projection.steps)


def _inpaint_projected(proj, A, B, M, seeds, params) -> Projected:
    from facebatch.edit import mixing as mx
    from facebatch.invert.scores import psnr

    res = mx.inpaint(proj, A, M, seeds)
    scores = {"psnr_a": psnr(res.images, A, M), "psnr_hole": psnr(res.images, A, 1 - M)}
    # result: the known pixels kept, the hole filled; input: the hole shows as mid-grey
    return Projected(res.composite, A * M, scores, "inpaint", {}, res.ws, res.projection.steps, render=res.images)


def _style_projected(proj, A, B, M, seeds, params) -> Projected:
    from facebatch.edit import mixing as mx
    from facebatch.invert.scores import psnr

    weight = float(params.style_weight)
    res = mx.style_transfer(proj, A, B, M, seeds, style_weight=weight)
    scores = {"psnr_a": psnr(res.images, A, 1 - M), "style_distance": mx.style_distance(proj, res.images, B, M).numpy()}
    return Projected(res.images, A * (1 - M), scores, "style", {"style_weight": weight}, res.ws, res.projection.steps)


# -- apps that combine codes (worker side) --------------------------------------------------------------


def _morph_rows(p: CodesOfPair) -> list[dict]:
    import torch

    from facebatch.edit import mixing as mx

    (wa, na, _), (wb, nb, _) = p.codes["a"], p.codes["b"]
    both_noise = na is not None and nb is not None
    frames = int(p.params.frames)
    ends = ([n[None] for n in na], [n[None] for n in nb]) if both_noise else (None, None)
    ws, noise = mx.morph(wa[None], wb[None], frames, *ends)
    images = render_codes(p.state, ws[0], [n[0] for n in noise] if noise else None)
    anim = animation(p.run, p.folder, images, p.params.animation)
    rows = []
    for k, t in enumerate(torch.linspace(0.0, 1.0, frames).tolist()):
        rel = save(p.run, f"{p.folder}/frame-{k:03d}.png", images[k])
        params = {"frames": frames, "noise": "interpolated" if both_noise else "const"}
        rows.append(p.row(variant=f"t={t:.2f}", t=t, path=rel, animation=anim, w=ws[0, k].numpy(), params=params))
    return rows


def _layer_crossover_rows(p: CodesOfPair) -> list[dict]:
    from facebatch.edit import mixing as mx
    from facebatch.edit.layers import format_layers

    (wa, _, _), (wb, nb, _) = p.codes["a"], p.codes["b"]
    layers = p.params.layers
    w = mx.layer_crossover(wa[None], wb[None], layers)
    label = f"layers {format_layers(layers)}" if layers else "layers none"
    image = render_codes(p.state, w, [n[None] for n in nb] if nb is not None else None)[0]
    rel = save(p.run, f"{p.folder}/{file_label(label)}.png", image)
    params = {"layers": layers, "noise": "b" if nb is not None else "const"}
    return [p.row(variant=label, path=rel, w=w[0].numpy(), params=params)]


def _expression_rows(p: CodesOfPair) -> list[dict]:
    import torch

    from facebatch.edit import mixing as mx
    from facebatch.edit.layers import format_layers

    (wa, na, _), (wb, _, _) = p.codes["a"], p.codes["b"]
    noise = [n[None] for n in na] if na is not None else None
    if "neutral" in p.codes:
        wn, _, sn = p.codes["neutral"]
        p.common["projected"] = p.common["projected"] or bool(sn)
        variants = [("offset", mx.expression_offset(wa[None], wb[None], wn[None]), {"strength": 1.0})]
    elif p.params.alpha_sweep:
        labels, alphas = mx.alpha_sweep(wa.shape[0])
        swept = mx.expression_sweep(wa[None], wb[None], alphas)
        variants = [(f"alpha {lab}", swept[:, k], {"alpha_layers": lab}) for k, lab in enumerate(labels)]
    elif p.params.alpha is not None:
        w = mx.expression_transfer(wa[None], wb[None], torch.tensor(p.params.alpha))
        variants = [("alpha custom", w, {"alpha": p.params.alpha})]
    else:
        lab = format_layers(p.params.alpha_layers)
        w = mx.expression_transfer(wa[None], wb[None], lab)
        variants = [(f"alpha {lab}", w, {"alpha_layers": lab})]
    rows = []
    for label, w, extra in variants:
        image = render_codes(p.state, w, noise)[0]
        rel = save(p.run, f"{p.folder}/{file_label(label)}.png", image)
        rows.append(
            p.row(variant=label, path=rel, w=w[0].numpy(), params={**extra, "noise": "a" if noise else "const"})
        )
    return rows


APPS: dict[str, App] = {
    "morph": App("morph", MorphParams, check=_check_morph, from_codes=_morph_rows),
    "crossover": App(
        "crossover",
        CrossoverParams,
        default_mask="left",
        check=_check_crossover,
        project=_crossover_projected,
        from_codes=_layer_crossover_rows,
    ),
    "inpaint": App(
        "inpaint",
        MaskedParams,
        columns=("a",),
        default_mask="center",
        mask_names_the_hole=True,
        check=_check_mask("inpaint"),
        project=_inpaint_projected,
    ),
    "style": App("style", StyleParams, default_mask="right", check=_check_style, project=_style_projected),
    "expression": App(
        "expression",
        ExpressionParams,
        takes_neutral=True,
        check=_check_expression,
        from_codes=_expression_rows,
    ),
}
