"""Per-shard noise maps (`RunDir.noise_part`: OUT/noise/part-NNNNN.npz), one entry per image and layer.

Noise maps are big (about 11 MB per image at 1024 px), so a shard's maps are never all in memory:
entries are appended to an open zip as batches finish. The file is an ordinary `.npz`
(`np.load(f)["<image_id>/noise03"]`); `read_noise` returns one image's maps in layer order.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from facebatch.pipeline import storage
from facebatch.pipeline.atomic import note_published, publish, temp_path

SEP = "/noise"


def entry_name(image_id: str, layer: int) -> str:
    return f"{image_id}{SEP}{layer:02d}"


class NoiseWriter:
    """Streams into the atomic writer's temp file and publishes it on `publish`.

    Entries of `keep_from` are copied first (a retry keeps the maps of the rows it does not redo).
    """

    def __init__(self, path: Path, keep_from: Path | None = None, drop_ids: Iterable[str] = ()):
        self.path = storage.location(path)
        if storage.is_url(self.path):  # finished locally, uploaded whole on publish
            fd, name = tempfile.mkstemp(prefix=".facebatch-noise-", suffix=".npz")
            os.close(fd)
            self.tmp = Path(name)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = temp_path(self.path)
        self.zip = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        if keep_from is not None and storage.location(keep_from).exists():
            drop = set(drop_ids)
            with storage.location(keep_from).open("rb") as raw, zipfile.ZipFile(raw) as old:
                for info in old.infolist():
                    if info.filename.rsplit(SEP, 1)[0] not in drop:
                        with old.open(info) as src, self.zip.open(info.filename, "w", force_zip64=True) as dst:
                            while chunk := src.read(1 << 20):
                                dst.write(chunk)

    def add(self, image_id: str, maps: Sequence[np.ndarray]) -> None:
        for layer, arr in enumerate(maps):
            with self.zip.open(entry_name(image_id, layer) + ".npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)

    def publish(self) -> None:
        self.zip.close()
        if storage.is_url(self.path):
            try:
                storage.put(self.tmp, self.path)
                note_published(self.path)
            finally:
                self.tmp.unlink(missing_ok=True)
            return
        publish(self.tmp, self.path)

    def discard(self) -> None:
        self.zip.close()
        self.tmp.unlink(missing_ok=True)


def read_noise(path: Path, image_id: str) -> list[np.ndarray]:
    """The noise maps of one image ([1, r, r] each, in the generator's layer order)."""
    with storage.location(path).open("rb") as raw, np.load(raw, allow_pickle=False) as npz:
        keys = sorted(k for k in npz.files if k.rsplit(SEP, 1)[0] == image_id)
        if not keys:
            raise KeyError(f"{path} has no noise maps for {image_id!r}")
        return [npz[k] for k in keys]
