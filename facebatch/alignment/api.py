"""What the rest of facebatch calls: find faces in a PIL image and return FFHQ-aligned crops.

Importing this module loads no landmark library; the backend is loaded (once per process) on first use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from facebatch.alignment.ffhq import ffhq_quad, warp_quad
from facebatch.alignment.landmarks import BACKENDS, DEFAULT_BACKEND, Face, check_name, get_backend
from facebatch.errors import FacebatchError, InputError

FACE_MODES = ("largest", "all")

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "FACE_MODES",
    "AlignedFace",
    "NoFaceFound",
    "align_for_projection",
    "check_backend",
    "detect_and_align",
    "find_faces",
]


class NoFaceFound(FacebatchError):
    """No face scored above the detection threshold: the image gets an error row, never a crash."""


@dataclass
class AlignedFace:
    image: Image.Image  # size x size RGB
    quad: np.ndarray  # [4, 2] float64 crop corners in source pixels: top-left, bottom-left, bottom-right, top-right
    landmarks: np.ndarray  # [68, 2] float64 in source pixels
    box: np.ndarray  # [4] float64 x0, y0, x1, y1 in source pixels
    score: float  # detection score on the backend's scale
    face_index: int  # 0 = the largest face; then by decreasing box area


def check_backend(backend: str = DEFAULT_BACKEND) -> None:
    """Load the backend now (cached): a missing package or model file fails before any work is planned."""
    get_backend(check_name(backend))


def find_faces(image: Image.Image, backend: str = DEFAULT_BACKEND, min_score: float | None = None) -> list[Face]:
    """Faces scoring at least min_score (None: the backend's default), largest box first."""
    impl = get_backend(check_name(backend))
    threshold = impl.default_min_score if min_score is None else float(min_score)
    faces = impl.faces(np.asarray(image.convert("RGB")), threshold)
    return sorted(faces, key=lambda f: -f.area)


def detect_and_align(
    image: Image.Image,
    size: int,
    backend: str = DEFAULT_BACKEND,
    faces: str = "largest",
    min_score: float | None = None,
) -> list[AlignedFace]:
    """FFHQ-aligned size x size crops of the largest face or of every face; raises NoFaceFound."""
    if faces not in FACE_MODES:
        raise InputError(f"faces must be one of {', '.join(FACE_MODES)}, not {faces!r}")
    if size < 1:
        raise InputError(f"the aligned size must be a positive number of pixels, not {size}")
    found = find_faces(image, backend, min_score)
    if not found:
        threshold = get_backend(backend).default_min_score if min_score is None else min_score
        raise NoFaceFound(
            f"no face found ({backend} detector, score >= {threshold:g}, image {image.width}x{image.height})"
        )
    if faces == "largest":
        found = found[:1]
    rgb = image.convert("RGB")
    aligned = []
    for index, face in enumerate(found):
        quad = ffhq_quad(face.landmarks)
        aligned.append(AlignedFace(warp_quad(rgb, quad, size), quad, face.landmarks, face.box, face.score, index))
    return aligned


def align_for_projection(
    image: Image.Image, size: int, backend: str = DEFAULT_BACKEND
) -> tuple[Image.Image, np.ndarray]:
    """The largest face, aligned: (size x size RGB image, quad [4, 2] in source pixels) for `project --align`."""
    face = detect_and_align(image, size, backend, faces="largest")[0]
    return face.image, face.quad
