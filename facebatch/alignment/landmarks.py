"""Landmark backends behind one interface, loaded once per process.

A backend finds faces in an RGB uint8 array and returns, for each, its box, a detection score on the
backend's own scale, and the 68 iBUG 300-W landmarks FFHQ alignment needs. Loading one is slow
(dlib's predictor is a 100 MB file), so `get_backend` keeps one instance per process: every shard a
Dask worker runs reuses it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from facebatch.errors import InputError

DEFAULT_BACKEND = "dlib"


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # [4] float: x0, y0, x1, y1 in source pixels
    score: float  # the detector's confidence, on the backend's own scale
    landmarks: np.ndarray  # [68, 2] float: iBUG 300-W order, source pixels

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


class LandmarkBackend(Protocol):
    name: str
    default_min_score: float  # detections scoring below this are not faces

    def faces(self, rgb: np.ndarray, min_score: float) -> list[Face]:
        """Every face in an [H, W, 3] uint8 RGB array scoring at least min_score, in any order."""
        ...


def _dlib() -> LandmarkBackend:
    from facebatch.alignment.dlib_backend import DlibBackend

    return DlibBackend()


def _face_alignment() -> LandmarkBackend:
    from facebatch.alignment.fan_backend import FanBackend

    return FanBackend()


_FACTORIES = {"dlib": _dlib, "face-alignment": _face_alignment}
BACKENDS = tuple(_FACTORIES)


def check_name(name: str) -> str:
    if name not in _FACTORIES:
        raise InputError(f"unknown landmark backend {name!r} (choose from: {', '.join(BACKENDS)})")
    return name


@functools.lru_cache(maxsize=None)
def get_backend(name: str = DEFAULT_BACKEND) -> LandmarkBackend:
    """The process-wide instance; raises ModelNotAvailable (one line) when its package or files are missing."""
    return _FACTORIES[check_name(name)]()
