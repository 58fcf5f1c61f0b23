"""One editing direction and its signed distance, for the three latent spaces facebatch fits in.

Every boundary's signed distance is linear in a W+ code: ``d(ws) = <ws, gradient> + offset``.
Writing each space that way lets edits, conditions and tests treat all spaces alike.

- ``w``: the feature is the mean over ``layers`` of the W+ rows (for sampled latents all rows are
  the W code itself); ``normal`` is one unit ``(w_dim,)`` vector; an edit adds it to every row in
  ``layers``.
- ``wplus``: the feature is the selected rows flattened; ``normal`` is ``(L, w_dim)`` with unit
  Frobenius norm.
- ``layer``: one SVM per selected row; ``normal`` is ``(L, w_dim)`` with unit rows and
  ``intercept`` one per row; the distance is the mean of the per-row distances.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facebatch.errors import InputError

SPACES = ("w", "wplus", "layer")


@dataclass
class Boundary:
    name: str
    space: str
    layers: list[int]
    num_ws: int
    normal: np.ndarray
    intercept: np.ndarray
    method: str = "svm"
    generator_sha256: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise InputError(f"boundary {self.name!r}: unknown space {self.space!r} (use one of {', '.join(SPACES)})")
        self.layers = [int(i) for i in self.layers]
        if (
            not self.layers
            or sorted(set(self.layers)) != self.layers
            or not 0 <= self.layers[0] <= self.layers[-1] < self.num_ws
        ):
            raise InputError(
                f"boundary {self.name!r}: layers {self.layers} are not sorted unique indices below {self.num_ws}"
            )
        self.normal = np.asarray(self.normal, dtype=np.float64)
        self.intercept = np.asarray(self.intercept, dtype=np.float64)
        want_normal = (self.normal.shape[-1],) if self.space == "w" else (len(self.layers), self.normal.shape[-1])
        want_intercept = (len(self.layers),) if self.space == "layer" else ()
        if self.normal.shape != want_normal or self.intercept.shape != want_intercept:
            raise InputError(
                f"boundary {self.name!r}: normal {self.normal.shape} / intercept {self.intercept.shape} do not fit "
                f"space {self.space!r} with {len(self.layers)} layers"
            )
        if not np.all(np.isfinite(self.normal)) or not np.all(np.isfinite(self.intercept)):
            raise InputError(f"boundary {self.name!r}: normal or intercept is not finite")

    @property
    def w_dim(self) -> int:
        return int(self.normal.shape[-1])

    def raw_direction(self) -> np.ndarray:
        """The W+ displacement of one unit along the normal(s), before any scaling or projection."""
        out = np.zeros((self.num_ws, self.w_dim))
        out[self.layers] = self.normal
        return out

    def gradient(self) -> np.ndarray:
        """G with d(ws) = <ws, G> + offset."""
        if self.space == "wplus":
            return self.raw_direction()
        return self.raw_direction() / len(self.layers)

    @property
    def offset(self) -> float:
        return float(self.intercept.mean()) if self.space == "layer" else float(self.intercept)

    def check_latents(self, ws: np.ndarray) -> None:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise InputError(
                f"boundary {self.name!r} is for latents of shape [{self.num_ws}, {self.w_dim}], "
                f"got {list(ws.shape[1:])}"
            )

    def distance(self, ws: np.ndarray) -> np.ndarray:
        """Signed distance of each W+ code (N, num_ws, w_dim): positive on the attribute's side."""
        ws = np.asarray(ws)
        self.check_latents(ws)
        return np.einsum("nlc,lc->n", ws.astype(np.float64), self.gradient()) + self.offset

    def layer_distances_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Per-row distances (N, L) of a ``layer`` boundary, whose mean is ``distance``, given only the
        boundary's layers of each latent (N, L, w_dim)."""
        return np.einsum("nlc,lc->nl", np.asarray(rows, dtype=np.float64), self.normal) + self.intercept
