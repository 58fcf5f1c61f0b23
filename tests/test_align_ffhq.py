"""The FFHQ recipe's geometry without any landmark model: the quad's shape and the warp's pixel placement."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facebatch.alignment.ffhq import aligned_to_source, ffhq_quad, keypoints, roll_degrees, source_to_aligned, warp_quad


def landmarks(eye_l, eye_r, mouth_l, mouth_r) -> np.ndarray:
    """68 points where only what FFHQ reads is set: both eyes' six points, the outer mouth corners."""
    lm = np.zeros((68, 2))
    lm[36:42], lm[42:48], lm[48], lm[54] = eye_l, eye_r, mouth_l, mouth_r
    return lm


def rotate(points, degrees, centre=(0.0, 0.0)):
    t = np.radians(degrees)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (np.asarray(points, float) - centre) @ rot.T + centre


LEVEL = landmarks((100, 100), (160, 100), (110, 170), (150, 170))  # eyes 60 apart, mouth 70 below


def test_quad_of_a_level_face_follows_the_ffhq_constants():
    quad = ffhq_quad(LEVEL)
    # eye-to-eye 60 -> 2 * 60 = 120; eye-to-mouth 70 -> 1.8 * 70 = 126 wins: half side 126,
    # centre 10% down to the mouth.
    centre = np.array([130.0, 100.0 + 0.1 * 70])
    half = 126.0
    np.testing.assert_allclose(quad, centre + half * np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]]), atol=1e-9)
    # a wide face: the eye distance sets the size instead
    wide = ffhq_quad(landmarks((100, 100), (200, 100), (120, 150), (180, 150)))
    assert np.hypot(*(wide[3] - wide[0])) == pytest.approx(2 * 2.0 * 100)


@pytest.mark.parametrize("degrees", [-35.0, -7.5, 12.0, 90.0])
def test_quad_turns_scales_and_moves_with_the_face(degrees):
    base = ffhq_quad(LEVEL)
    pivot = np.array([40.0, -25.0])
    moved = 1.7 * rotate(LEVEL, degrees, pivot) + [300.0, 50.0]
    np.testing.assert_allclose(ffhq_quad(moved), 1.7 * rotate(base, degrees, pivot) + [300.0, 50.0], atol=1e-9)
    assert roll_degrees(moved) == pytest.approx(degrees)


def test_quad_rejects_other_landmark_counts():
    with pytest.raises(ValueError, match="68"):
        ffhq_quad(np.zeros((5, 2)))


def test_keypoints_are_eye_centres_and_outer_mouth_corners():
    lm = LEVEL.copy()
    lm[36:42] += np.linspace(-3, 3, 6)[:, None]  # spread the eye points: only their mean counts
    np.testing.assert_allclose(keypoints(lm), [[100, 100], [160, 100], [110, 170], [150, 170]])


def test_source_and_aligned_coordinates_are_inverse():
    quad = ffhq_quad(rotate(LEVEL, 23.0, (130, 130)) + 17.0)
    pts = np.random.default_rng(0).uniform(0, 400, (20, 2))
    for size in (64, 257, 1024):
        np.testing.assert_allclose(aligned_to_source(source_to_aligned(pts, quad, size), quad, size), pts, atol=1e-9)
    # the quad's corners are the aligned image's outer pixel edges
    np.testing.assert_allclose(
        source_to_aligned(quad[[0, 3, 2, 1]], quad, 100),
        [[-0.5, -0.5], [99.5, -0.5], [99.5, 99.5], [-0.5, 99.5]],
        atol=1e-9,
    )


def blobs(shape, centres, sigma):
    """A black RGB image with a bright Gaussian blob at each (sub-pixel) centre."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    img = np.zeros((h, w))
    for cx, cy in centres:
        img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    return Image.fromarray(np.uint8(np.clip(img * 250, 0, 255))).convert("RGB")


def centroid(gray: np.ndarray, near: np.ndarray, radius: int) -> np.ndarray:
    x0, y0 = np.rint(near).astype(int)
    win = gray[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1].astype(np.float64)
    win = np.clip(win - 0.1 * win.max(), 0, None)  # ignore the faint tails of the Lanczos ringing
    yy, xx = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
    return np.array([(win * xx).sum(), (win * yy).sum()]) / win.sum()


@pytest.mark.parametrize("case", ["level", "rotated", "shrink", "leaves_the_image"])
def test_pixels_land_where_the_quad_says(case):
    """Blobs at known source points appear in the aligned image at source_to_aligned's prediction (< 0.25 px)."""
    size, shape, scale, degrees, shift = 128, (420, 380), 1.0, 0.0, (60.0, 80.0)
    if case == "rotated":
        degrees = 31.0
    elif case == "shrink":  # a quad 8x the output: FFHQ first shrinks the photo by 4 with Lanczos
        shape, scale, shift = (2400, 2300), 8.0, (60.0, 40.0)
    elif case == "leaves_the_image":  # the crop square sticks out on the left and top: padded
        shift, degrees = (-40.0, -60.0), 10.0
    lm = rotate(LEVEL * scale + np.array(shift) * scale, degrees, (shape[1] / 2, shape[0] / 2))
    quad = ffhq_quad(lm)
    inside = keypoints(lm)
    img = blobs(shape, inside, sigma=2.5 * scale)
    out = warp_quad(img, quad, size)
    assert out.size == (size, size) and out.mode == "RGB"
    gray = np.asarray(out.convert("L"))
    predicted = source_to_aligned(inside, quad, size)
    found = np.stack([centroid(gray, p, radius=5) for p in predicted])
    assert np.abs(found - predicted).max() < 0.25, (found, predicted)


def test_padding_is_a_blurred_reflection_not_black():
    """Where the crop square leaves the photo, FFHQ fills with a blurred, greyed reflection."""
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(60, 200, (300, 300, 3), dtype=np.uint8))
    quad = np.array([[-150.0, -150.0], [-150.0, 250.0], [250.0, 250.0], [250.0, -150.0]])  # top-left corner outside
    padded = np.asarray(warp_quad(photo, quad, 64), dtype=np.float64)
    bare = np.asarray(warp_quad(photo, quad, 64, pad=False), dtype=np.float64)
    outside = (slice(0, 20), slice(0, 20))  # source x, y < -25: off the photo
    assert bare[outside].max() == 0  # PIL's QUAD leaves black where nothing is
    assert padded[outside].min() > 60  # reflection, not black ...
    assert padded[outside].std() < 0.25 * padded[40:, 40:].std()  # ... and blurred towards the median
    np.testing.assert_allclose(padded[48:, 48:], bare[48:, 48:], atol=2)  # the photo itself is untouched


@pytest.mark.parametrize("size", [1, 31, 256])
def test_any_output_size(size):
    out = warp_quad(Image.new("RGB", (200, 200), (10, 200, 30)), ffhq_quad(LEVEL * 0.5), size)
    assert out.size == (size, size)
    assert np.abs(np.asarray(out, dtype=int) - (10, 200, 30)).max() <= 1
    with pytest.raises(ValueError):
        warp_quad(Image.new("RGB", (8, 8)), ffhq_quad(LEVEL), 0)
