"""SeFa: closed-form editing directions from the generator's style-modulation (affine) weights.

Each affine layer maps w to per-channel styles, ``s = A w + b``. The unit w directions that change
the styles most are the top eigenvectors of ``A^T A`` over the chosen layers (Shen & Zhou, CVPR'21).
As in genforce/sefa ``factorize_weight``: each style channel's weight row is normalised to unit
length first, and a "layer" is a W+ row: every conv affine that reads that row, plus the final
ToRGB, which is the only reader of the last row. The other ToRGB affines share their row with
the next block's first conv and are left out unless ``include_torgb``. ``eigh`` instead of
genforce's ``eig``: the matrix is symmetric, so eigh is exact and returns real vectors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from facebatch.edit.boundary import Boundary
from facebatch.edit.layers import format_layers
from facebatch.errors import InputError

_AFFINE = re.compile(r"^(?:.*\.)?synthesis\.b(\d+)\.(conv0|conv1|torgb)\.affine\.weight$")


@dataclass(frozen=True)
class AffineLayer:
    name: str  # state-dict key
    resolution: int
    kind: str  # conv0 | conv1 | torgb
    w_index: int  # which W+ row feeds it


def affine_layers(state: Mapping[str, object]) -> tuple[list[AffineLayer], int]:
    """Affine weights of an NVlabs-named generator with the W+ row each reads, and num_ws.

    NVlabs blocks consume rows in resolution order: a block reads ``num_conv + num_torgb`` rows
    from the running index and advances it by ``num_conv``, so a block's ToRGB shares its row
    with the next block's conv0 (training/networks.py, SynthesisNetwork.forward).
    """
    found: dict[int, dict[str, str]] = {}
    for key in state:
        m = _AFFINE.match(key)
        if m:
            found.setdefault(int(m.group(1)), {})[m.group(2)] = key
    if not found:
        raise InputError(
            "the generator has no synthesis.b*.conv*.affine.weight tensors (not an NVlabs-named StyleGAN2)"
        )
    layers, w_idx = [], 0
    for res in sorted(found):
        block = found[res]
        kinds = [k for k in ("conv0", "conv1") if k in block]
        for j, kind in enumerate(kinds):
            layers.append(AffineLayer(block[kind], res, kind, w_idx + j))
        if "torgb" in block:
            layers.append(AffineLayer(block["torgb"], res, "torgb", w_idx + len(kinds)))
        w_idx += len(kinds)
    num_ws = max(layer.w_index for layer in layers) + 1
    return layers, num_ws


def chosen_affines(layers: list[AffineLayer], num_ws: int, w_rows: list[int], include_torgb: bool) -> list[AffineLayer]:
    last = num_ws - 1
    return [a for a in layers if a.w_index in w_rows and (a.kind != "torgb" or include_torgb or a.w_index == last)]


def _as_numpy(t) -> np.ndarray:
    return t.detach().cpu().double().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=np.float64)


def factorize(
    state: Mapping[str, object], w_rows: list[int] | None = None, include_torgb: bool = False
) -> tuple[np.ndarray, np.ndarray, list[AffineLayer], int]:
    """Eigenvalues (descending), directions as rows (unit, orthonormal), the affines used, num_ws."""
    layers, num_ws = affine_layers(state)
    rows = list(range(num_ws)) if w_rows is None else list(w_rows)
    used = chosen_affines(layers, num_ws, rows, include_torgb)
    if not used:
        raise InputError(f"no affine layers read W+ rows {format_layers(rows)}")
    A = np.concatenate([_as_numpy(state[a.name]) for a in used], axis=0)  # [sum channels, w_dim]
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    values, vectors = np.linalg.eigh(A.T @ A)
    order = np.argsort(values)[::-1]
    values, directions = values[order], vectors[:, order].T
    # Eigenvectors have no sign; make the largest-magnitude coordinate positive so reruns agree.
    pivots = np.argmax(np.abs(directions), axis=1)
    directions = directions * np.sign(directions[np.arange(len(directions)), pivots])[:, None]
    return values, directions, used, num_ws


def sefa_boundaries(
    state: Mapping[str, object],
    k: int = 10,
    w_rows: list[int] | None = None,
    include_torgb: bool = False,
    generator_sha256: str | None = None,
    prefix: str = "sefa",
) -> list[Boundary]:
    """The top-k directions as W-space boundaries over the chosen rows (intercept 0: a coordinate, not a classifier)."""
    values, directions, used, num_ws = factorize(state, w_rows, include_torgb)
    if not 1 <= k <= len(directions):
        raise InputError(f"-k must be between 1 and {len(directions)} (w_dim) (got {k})")
    rows = sorted({a.w_index for a in used})
    total = float(values.sum())
    width = max(2, len(str(k - 1)))
    return [
        Boundary(
            name=f"{prefix}_{i:0{width}d}",
            space="w",
            layers=rows,
            num_ws=num_ws,
            normal=directions[i],
            intercept=0.0,
            method="sefa",
            generator_sha256=generator_sha256,
            info={
                "rank": i,
                "eigenvalue": float(values[i]),
                "explained": float(values[i] / total),
                "affines": [a.name for a in used],
                "include_torgb": include_torgb,
            },
        )
        for i in range(k)
    ]
