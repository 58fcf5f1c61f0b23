"""The FFHQ alignment recipe: 68 landmarks -> an oriented square crop -> a size x size image.

StyleGAN2 face models only invert well on crops made exactly the way FFHQ was made
(NVlabs/ffhq-dataset, `recreate_aligned_images`): eye centres and mouth corners fix a rotated
square; the image is shrunk when the square is much larger than the output, cropped to the square
plus a border, padded with a blurred reflection where the square leaves the image, sampled with
PIL's QUAD transform at 4x the output size and downsampled with Lanczos. This module restates that
recipe (same constants, same order of steps) for any output size; at size 1024 it is the original.

Coordinates: landmarks and quads are in source pixel-index units (pixel i's centre is at i, as dlib
and face-alignment report them). PIL's transforms address pixel edges, hence the +0.5 below.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

# The official tool transforms at 4096 for a 1024 output: sampling at 4x and then downsampling with
# Lanczos is what anti-aliases the result, so the ratio (not the absolute 4096) is what we keep.
TRANSFORM_OVERSAMPLE = 4

# iBUG 300-W 68-point indices (dlib and face-alignment share them).
EYE_LEFT = slice(36, 42)  # the subject's right eye, on the image's left
EYE_RIGHT = slice(42, 48)
MOUTH_LEFT, MOUTH_RIGHT = 48, 54  # outer mouth corners


def keypoints(landmarks: np.ndarray) -> np.ndarray:
    """[eye_left, eye_right, mouth_left, mouth_right] as a [4, 2] array: the only points FFHQ uses."""
    lm = _landmarks68(landmarks)
    return np.stack([lm[EYE_LEFT].mean(axis=0), lm[EYE_RIGHT].mean(axis=0), lm[MOUTH_LEFT], lm[MOUTH_RIGHT]])


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The oriented crop square as corners [top-left, bottom-left, bottom-right, top-right], float64 [4, 2]."""
    eye_l, eye_r, mouth_l, mouth_r = keypoints(landmarks)
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = (mouth_l + mouth_r) / 2 - eye_avg
    # The horizontal axis blends the eye line with the normal of the eye-to-mouth line, so both cues
    # level a tilted head; its length is the larger of the two face measures (FFHQ's constants).
    x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) / np.hypot(*x)
    y = np.array([-x[1], x[0]])
    centre = eye_avg + eye_to_mouth * 0.1
    return np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])


def warp_quad(
    image: Image.Image, quad: np.ndarray, size: int, *, pad: bool = True, transform_size: int | None = None
) -> Image.Image:
    """Sample the square `quad` of `image` into a size x size RGB image, FFHQ's shrink/crop/pad/transform."""
    if size < 1:
        raise ValueError(f"output size must be positive, got {size}")
    transform_size = transform_size or size * TRANSFORM_OVERSAMPLE
    img = image.convert("RGB")
    quad = np.asarray(quad, dtype=np.float64).reshape(4, 2).copy()
    qsize = float(np.hypot(*(quad[3] - quad[0])))

    # Shrink: a square far larger than the output is first downsampled as a whole (fast, anti-aliased).
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        img = img.resize(
            (int(np.rint(img.width / shrink)), int(np.rint(img.height / shrink))), Image.Resampling.LANCZOS
        )
        quad /= shrink
        qsize /= shrink

    # Crop to the square's bounding box plus a border.
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    crop = (
        max(lo[0] - border, 0),
        max(lo[1] - border, 0),
        min(hi[0] + border, img.width),
        min(hi[1] + border, img.height),
    )
    if crop[2] - crop[0] < img.width or crop[3] - crop[1] < img.height:
        img = img.crop(crop)
        quad -= crop[:2]

    # Pad where the square (plus border) leaves the image.
    lo, hi = np.floor(quad.min(axis=0)).astype(int), np.ceil(quad.max(axis=0)).astype(int)
    pads = (
        max(border - lo[0], 0),
        max(border - lo[1], 0),
        max(hi[0] - img.width + border, 0),
        max(hi[1] - img.height + border, 0),
    )
    if pad and max(pads) > border - 4:
        pads = tuple(int(p) for p in np.maximum(pads, int(np.rint(qsize * 0.3))))
        img = _blurred_reflection(img, pads, qsize)
        quad += pads[:2]

    out = img.transform(
        (transform_size, transform_size), Image.Transform.QUAD, tuple((quad + 0.5).flatten()), Image.Resampling.BILINEAR
    )
    if size < transform_size:
        out = out.resize((size, size), Image.Resampling.LANCZOS)
    return out


def _blurred_reflection(img: Image.Image, pads: tuple[int, int, int, int], qsize: float) -> Image.Image:
    """Reflect-pad (left, top, right, bottom), then fade the padding into a blur and the image median.

    A hard mirror makes a second, mirrored face at the border, which the generator then tries to
    reproduce; FFHQ blurs and greys the padding out with distance from the image edge.
    """
    left, top, right, bottom = pads
    padded = np.pad(np.asarray(img, dtype=np.uint8), ((top, bottom), (left, right), (0, 0)), "reflect")
    # PIL's Gaussian (three box passes, cost independent of sigma) instead of FFHQ's exact
    # scipy.ndimage.gaussian_filter: 0.14 s against 2-4 s at sigma 20 on a 1600 px canvas, and the
    # blurred layer differs by < 2 grey levels (mean 0.5), only inside the faded padding.
    blurred = np.asarray(Image.fromarray(padded).filter(ImageFilter.GaussianBlur(qsize * 0.02)), dtype=np.float32)
    arr = padded.astype(np.float32)
    h, w, _ = arr.shape
    yy, xx, _ = np.ogrid[:h, :w, :1]
    xx, yy = xx.astype(np.float32), yy.astype(np.float32)
    mask = np.maximum(
        1.0 - np.minimum(xx / left, (w - 1 - xx) / right), 1.0 - np.minimum(yy / top, (h - 1 - yy) / bottom)
    )
    arr += (blurred - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
    return Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)), "RGB")


def source_to_aligned(points: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """Where source pixel coordinates land in the size x size aligned image (pixel-index units).

    The FFHQ quad is a square, so the warp is a similarity: solve for the fractions along the
    quad's two edges, then scale to the output. Used to check alignments and to paste edits back.
    """
    quad = np.asarray(quad, dtype=np.float64).reshape(4, 2)
    edges = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1)  # columns: along x, along y
    frac = np.linalg.solve(edges, (np.asarray(points, dtype=np.float64).reshape(-1, 2) - quad[0]).T).T
    return frac * size - 0.5


def aligned_to_source(points: np.ndarray, quad: np.ndarray, size: int) -> np.ndarray:
    """The inverse of source_to_aligned: aligned-image pixel coordinates back in the source image."""
    quad = np.asarray(quad, dtype=np.float64).reshape(4, 2)
    frac = (np.asarray(points, dtype=np.float64).reshape(-1, 2) + 0.5) / size
    return quad[0] + frac[:, :1] * (quad[3] - quad[0]) + frac[:, 1:] * (quad[1] - quad[0])


def roll_degrees(landmarks: np.ndarray) -> float:
    """Angle of the eye line against the horizontal (positive: the image-right eye is lower)."""
    eye_l, eye_r = keypoints(landmarks)[:2]
    d = eye_r - eye_l
    return float(np.degrees(np.arctan2(d[1], d[0])))


def _landmarks68(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected 68 (x, y) landmarks, got an array of shape {lm.shape}")
    return lm
