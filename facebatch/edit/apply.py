"""Move W+ codes along a boundary by a strength in units of its signed distance.

``relative`` (the default) adds ``s`` to every code's distance: each image changes by the same
amount, what an augmentation set wants. ``absolute`` sets every code's distance to ``s``, as
InterFaceGAN's ``linear_interpolate`` does for 2-D (W/Z) codes: useful to bring a set to one level.
(InterFaceGAN itself is relative for W+ codes and absolute for W codes; one rule for all is clearer.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from facebatch.checks import an_instance, items
from facebatch.edit.boundary import Boundary
from facebatch.edit.conditional import edit_step
from facebatch.edit.layers import parse_layers
from facebatch.errors import InputError
from facebatch.ranges import MAX_MAGNITUDE, finite_number

MODES = ("relative", "absolute")


def edit_latents(
    ws: np.ndarray,
    boundary: Boundary,
    strength: float | np.ndarray,
    *,
    conditions: Sequence[Boundary] = (),
    layers: Sequence[int] | None = None,
    mode: str = "relative",
    step: np.ndarray | None = None,
) -> np.ndarray:
    """Edited copy of ws (N, num_ws, w_dim), float32. Pass a precomputed ``step`` to skip recomputing it.

    ``strength`` is one number for every row or one per row (N,); ``layers`` (the W+ rows that move, default
    the boundary's own) is a list of indices or a selection such as "0-7", as the commands take it.
    """
    source = "from load_boundaries or fit_boundaries"
    an_instance(boundary, Boundary, "boundary", source)
    conditions = [an_instance(c, Boundary, f"conditions[{i}]", source)
                  for i, c in enumerate(items(conditions, "conditions", "boundaries"))]  # fmt: skip
    if layers is not None:
        layers = parse_layers(layers, boundary.num_ws)
    if mode not in MODES:
        raise InputError(f"unknown edit mode {mode!r}: use relative or absolute")
    ws = np.asarray(ws)
    boundary.check_latents(ws)
    if step is None:
        step = edit_step(boundary, conditions, layers)
    elif np.shape(step) != (boundary.num_ws, boundary.w_dim):
        want = [boundary.num_ws, boundary.w_dim]
        raise InputError(f"step has shape {list(np.shape(step))}, the boundary's W+ is {want}")
    amount = np.broadcast_to(np.asarray(strength, dtype=np.float64), (len(ws),)).copy()
    unusable = amount[~(np.abs(amount) <= MAX_MAGNITUDE)]  # nan fails every comparison
    if unusable.size:
        finite_number(unusable[0], "strength")
    if mode == "absolute":
        amount = amount - boundary.distance(ws)
    return (ws.astype(np.float64) + amount[:, None, None] * step[None]).astype(np.float32)
