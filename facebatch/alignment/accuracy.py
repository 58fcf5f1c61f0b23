"""How far alignment moves the FFHQ keypoints of an already aligned face: the recipe's own check.

Re-aligning an FFHQ-like crop should be (nearly) the identity. Two distances per keypoint (eye
centres, mouth corners), in pixels of the size x size output:
  - geometric: the source keypoints mapped through the crop quad, against where they already were;
  - redetected: keypoints found again on the aligned pixels, against the same places (this also
    checks that the pixels really went where the quad says).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from facebatch.alignment.api import detect_and_align, find_faces
from facebatch.alignment.ffhq import keypoints, roll_degrees, source_to_aligned
from facebatch.alignment.landmarks import DEFAULT_BACKEND


@dataclass
class Realignment:
    geometric: np.ndarray  # [4] px: eye_left, eye_right, mouth_left, mouth_right
    redetected: np.ndarray  # [4] px; NaN when no face is found on the aligned image
    roll_after: float  # degrees of the eye line on the aligned image (redetected)


def realignment_shift(image: Image.Image, size: int, backend: str = DEFAULT_BACKEND) -> Realignment:
    face = detect_and_align(image, size, backend)[0]
    scale = size / image.width  # the input is square, as aligned crops are
    before = (keypoints(face.landmarks) + 0.5) * scale - 0.5
    geometric = np.linalg.norm(source_to_aligned(keypoints(face.landmarks), face.quad, size) - before, axis=1)
    again = find_faces(face.image, backend)
    if not again:
        return Realignment(geometric, np.full(4, np.nan), float("nan"))
    after = keypoints(again[0].landmarks)
    return Realignment(geometric, np.linalg.norm(after - before, axis=1), roll_degrees(again[0].landmarks))
