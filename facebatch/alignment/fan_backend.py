"""face-alignment (Bulat & Tzimiropoulos' FAN, with the S3FD detector) as a landmark backend.

The package downloads its two weight files into torch.hub's checkpoint folder on first use. We fetch
them ourselves first (on the client, before any worker starts; FACEBATCH_OFFLINE honoured), so a
machine that cannot get them ends in one ModelNotAvailable line naming the files and the folder
instead of a traceback from inside the library.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from facebatch.alignment.landmarks import Face
from facebatch.errors import ModelNotAvailable

# face_alignment 1.5's own URLs (api.models_urls['2DFAN-4'], detection/sfd models_urls['s3fd']).
MODEL_URLS = {
    "2DFAN4-11f355bf06.pth.tar": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    "s3fd-619a316812.pth": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}
# S3FD scores are probabilities; 0.5 is the library's own filter_threshold. We have no weights here
# to measure a better cut-off on (they cannot be downloaded on this machine).
DEFAULT_MIN_SCORE = 0.5


def checkpoint_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def ensure_models() -> Path:
    """The checkpoint folder with both files in it, downloading what is missing unless offline."""
    import urllib.error

    from torch.hub import download_url_to_file  # writes a .partial file beside the target, then renames it

    from facebatch.nets.cache import offline

    folder = checkpoint_dir()
    missing = [name for name in MODEL_URLS if not (folder / name).is_file()]
    if missing and offline():
        raise ModelNotAvailable(
            f"face-alignment needs {' and '.join(missing)} in {folder} and downloads are off (FACEBATCH_OFFLINE); "
            f"copy them there from a machine that has them, or use --backend dlib"
        )
    for name in missing:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            download_url_to_file(MODEL_URLS[name], str(folder / name), progress=False)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ModelNotAvailable(
                f"face-alignment model {name} is not in {folder} and downloading "
                f"{MODEL_URLS[name]} failed ({reason}); copy it there, or use --backend dlib"
            ) from None
    return folder


class FanBackend:
    name = "face-alignment"
    default_min_score = DEFAULT_MIN_SCORE

    def __init__(self, device: str = "cpu") -> None:
        try:
            import face_alignment
        except ImportError:
            raise ModelNotAvailable(
                "the face-alignment backend needs the face-alignment package: "
                "pip install face-alignment (or use --backend dlib)"
            ) from None
        ensure_models()
        kwargs = dict(device=device, face_detector="sfd")
        # torch.compile (face-alignment >= 1.5's default) costs minutes on CPU for one image's worth of work.
        if "compile" in face_alignment.FaceAlignment.__init__.__code__.co_varnames:
            kwargs["compile"] = False
        self._fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, **kwargs)
        self._lock = threading.Lock()  # one network instance shared by the threads of a worker

    def faces(self, rgb: np.ndarray, min_score: float) -> list[Face]:
        with self._lock:
            landmarks, _, boxes = self._fa.get_landmarks_from_image(np.ascontiguousarray(rgb), return_bboxes=True)
        found = []
        for lm, box in zip(landmarks if landmarks is not None else [], boxes if boxes is not None else []):
            box = np.asarray(box, dtype=np.float64)
            score = float(box[4]) if box.shape[0] > 4 else 1.0
            if score >= min_score:
                found.append(Face(box=box[:4], score=score, landmarks=np.asarray(lm, dtype=np.float64)[:, :2]))
        return found
