"""Conditional editing: remove from an edit direction its components along other boundaries' normals.

InterFaceGAN's ``project_boundary`` has closed forms for one and two conditions and least squares
beyond; least squares covers every count (and rank-deficient condition sets) with one formula:
``v - C^T x`` with ``x = argmin |C^T x - v|``, which is ``v`` minus its projection on span(C).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from facebatch.edit.boundary import Boundary
from facebatch.errors import InputError

# Below this share of the primal left after projection, the conditions (nearly) contain the primal
# and the edit would need a huge step that moves mostly along directions of no interest.
MIN_REMAINING = 0.05


def project_out(v: np.ndarray, conditions: np.ndarray) -> np.ndarray:
    """v (D,) minus its least-squares projection on the rows of conditions (k, D)."""
    v = np.asarray(v, dtype=np.float64)
    C = np.atleast_2d(np.asarray(conditions, dtype=np.float64))
    if C.size == 0:
        return v.copy()
    x, *_ = np.linalg.lstsq(C.T, v, rcond=None)
    return v - C.T @ x


def conditional_normal(primal: np.ndarray, conditions: Sequence[np.ndarray]) -> np.ndarray:
    """Unit direction orthogonal to every condition normal: InterFaceGAN ``project_boundary`` for any count."""
    primal = np.asarray(primal, dtype=np.float64)
    if not len(conditions):
        return primal / np.linalg.norm(primal)
    C = np.stack([np.asarray(c, dtype=np.float64).ravel() for c in conditions])
    rest = project_out(primal.ravel(), C)
    norm = np.linalg.norm(rest)
    if norm < MIN_REMAINING * np.linalg.norm(primal):
        raise InputError("the primal direction lies (almost) in the span of the condition directions")
    return (rest / norm).reshape(primal.shape)


def edit_step(
    boundary: Boundary, conditions: Sequence[Boundary] = (), layers: Sequence[int] | None = None
) -> np.ndarray:
    """W+ displacement (num_ws, w_dim) that moves ``boundary``'s signed distance by exactly 1.

    Only rows in ``layers`` (default: the boundary's own) move. Each condition's signed distance
    does not move at all: the step is orthogonal to every condition's distance gradient on those
    rows. Strength s then means "change the distance by s", whatever the layers or conditions.
    """
    edit_rows = sorted(set(boundary.layers if layers is None else layers))
    mask = np.zeros((boundary.num_ws, 1))
    mask[edit_rows] = 1.0
    raw = boundary.raw_direction() * mask
    for c in conditions:
        if (c.num_ws, c.w_dim) != (boundary.num_ws, boundary.w_dim):
            raise InputError(
                f"condition {c.name!r} is for [{c.num_ws}, {c.w_dim}] latents, {boundary.name!r} for "
                f"[{boundary.num_ws}, {boundary.w_dim}]"
            )
    if conditions:
        C = np.stack([(c.gradient() * mask).ravel() for c in conditions])
        rest = project_out(raw.ravel(), C).reshape(raw.shape)
        if np.linalg.norm(rest) < MIN_REMAINING * np.linalg.norm(raw):
            names = ", ".join(c.name for c in conditions)
            raise InputError(f"{boundary.name!r} lies (almost) in the span of the conditions ({names}) on these layers")
        raw = rest
    gain = float(np.sum(raw * boundary.gradient()))
    if abs(gain) < 1e-12:
        raise InputError(
            f"the selected layers do not touch {boundary.name!r}'s layers {boundary.layers}: nothing to edit"
        )
    return raw / gain
