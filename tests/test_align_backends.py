"""The face-alignment adapter against a stand-in library (its real weights cannot be fetched in tests)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from facebatch.alignment import fan_backend
from facebatch.alignment.api import detect_and_align
from facebatch.alignment.landmarks import get_backend


class FakeFaceAlignment:
    """What face_alignment 1.5 returns: landmarks [68, 2 or 3] per face, boxes [x0, y0, x1, y1, score]."""

    calls: list[dict] = []

    def __init__(self, landmarks_type, **kwargs):
        FakeFaceAlignment.calls.append(kwargs)

    def get_landmarks_from_image(self, image, return_bboxes=False):
        assert return_bboxes and image.dtype == np.uint8 and image.shape[2] == 3
        eyes_mouth = np.zeros((68, 3))
        eyes_mouth[36:42, :2], eyes_mouth[42:48, :2] = (40, 50), (80, 50)
        eyes_mouth[48, :2], eyes_mouth[54, :2] = (48, 100), (72, 100)
        small = eyes_mouth.copy()
        small[:, :2] = small[:, :2] * 0.5 + 120
        boxes = [np.array([20.0, 20.0, 100.0, 120.0, 0.98]), np.array([125.0, 125.0, 165.0, 175.0, 0.3])]
        return [small, eyes_mouth], None, [boxes[1], boxes[0]]


@pytest.fixture
def fake_library(monkeypatch):
    module = types.ModuleType("face_alignment")
    module.FaceAlignment = FakeFaceAlignment
    module.LandmarksType = types.SimpleNamespace(TWO_D="2D")
    monkeypatch.setitem(sys.modules, "face_alignment", module)
    monkeypatch.setattr(fan_backend, "ensure_models", lambda: None)
    get_backend.cache_clear()
    yield
    get_backend.cache_clear()


def test_face_alignment_adapter_filters_by_score_and_orders_by_size(fake_library):
    from PIL import Image

    photo = Image.new("RGB", (200, 200), (100, 100, 100))
    faces = detect_and_align(photo, 32, backend="face-alignment", faces="all")
    assert len(faces) == 1  # the 0.3 box is under S3FD's 0.5
    face = faces[0]
    assert face.score == pytest.approx(0.98) and face.landmarks.shape == (68, 2)
    np.testing.assert_allclose(face.box, [20, 20, 100, 120])
    both = detect_and_align(photo, 32, backend="face-alignment", faces="all", min_score=0.2)
    assert [f.face_index for f in both] == [0, 1] and both[0].score == pytest.approx(0.98)  # largest first
    assert FakeFaceAlignment.calls[-1]["device"] == "cpu" and FakeFaceAlignment.calls[-1]["face_detector"] == "sfd"
