"""dlib's HOG face detector + 68-point shape predictor: the landmarks FFHQ itself was aligned with.

Both come from PyPI with no download at run time: `dlib-bin` (a wheel) and `face-recognition-models`
(the CC0 predictor file). The latter's __init__ imports setuptools' pkg_resources, which setuptools
>= 81 no longer ships, so the file is located through the import system without importing the
package.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from facebatch.alignment.landmarks import Face
from facebatch.errors import ModelNotAvailable

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
INSTALL_HINT = "pip install 'facebatch[align]' (dlib-bin and face-recognition-models)"

# Detection scale. The HOG window is 80 px: faces smaller than that are not found at upsample 0.
# Small images (longer side <= 640 px, e.g. CelebA crops) are upsampled once, finding faces from
# ~40 px; large photos are scanned at 2048 px at most (a 12 MP photo: 0.5 s instead of 3 s),
# which still finds any face wider than 1/25 of the photo. Landmarks always use full resolution.
UPSAMPLE_UP_TO = 640
DETECT_MAX_SIDE = 2048

# HOG scores are SVM margins (dlib's own cut-off is 0). Measured on the test photos: the 34 non-face
# images score at most -0.13 and a mission patch on the astronaut's suit scores +0.12, while the 38
# CelebA-HQ faces score >= 0.72 and the astronaut's face 1.16; on 1000 CelebA crops a 0.3 cut-off
# misses 5.1% of faces against 2.7% at 0. See tests/test_align_data.py and the align README section.
DEFAULT_MIN_SCORE = 0.3


def predictor_path() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(f"the dlib landmark backend needs face-recognition-models: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / PREDICTOR_FILE
    if not path.is_file():
        raise ModelNotAvailable(f"{path} is missing: reinstall face-recognition-models ({INSTALL_HINT})")
    return path


class DlibBackend:
    name = "dlib"
    default_min_score = DEFAULT_MIN_SCORE

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError:
            raise ModelNotAvailable(f"the dlib landmark backend needs dlib: {INSTALL_HINT}") from None
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_path()))
        # Worker threads of one process (Dask threads, the decode-ahead thread) share this instance;
        # dlib's objects are not documented as thread-safe, and a lock costs nothing beside HOG.
        self._lock = threading.Lock()

    def faces(self, rgb: np.ndarray, min_score: float) -> list[Face]:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        height, width = rgb.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
        small = (
            rgb
            if scale == 1.0
            else np.asarray(
                Image.fromarray(rgb).resize(
                    (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR
                )
            )
        )
        upsample = 1 if max(small.shape[:2]) <= UPSAMPLE_UP_TO else 0
        found = []
        with self._lock:
            rects, scores, _ = self._detector.run(small, upsample, float(min_score))
            for rect, score in zip(rects, scores):
                box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float64) / scale
                full = self._dlib.rectangle(*(int(round(v)) for v in box))
                shape = self._predictor(rgb, full)
                landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
                found.append(Face(box=box, score=float(score), landmarks=landmarks))
        return found
