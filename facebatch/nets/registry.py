"""Named official checkpoints (models.json) and where each one lives in the cache.

A name is a promise of a URL, a resolution and, where someone hashed the real file, a sha256.
Entries without a pinned sha256 are trusted on first download: the hash is recorded beside
the file and `facebatch models verify` compares later reads against it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

from facebatch.nets import cache


@dataclass(frozen=True)
class ModelEntry:
    name: str
    url: str
    resolution: int
    format: str
    sha256: str | None
    description: str = ""
    source: str = ""
    license: str = ""

    @property
    def filename(self) -> str:
        return Path(urlparse(self.url).path).name

    def cache_path(self) -> Path:
        """Where the file is (or will be) cached: one folder per name keeps the upstream file name."""
        return cache.models_dir() / self.name / self.filename

    def is_cached(self) -> bool:
        return self.cache_path().is_file()

    def expected_sha256(self) -> str | None:
        """The pinned hash, else the one recorded at download (trust on first use)."""
        return self.sha256 or cache.read_sidecar(self.cache_path())

    def fetch(self, *, force: bool = False, progress: bool = True) -> Path:
        if force:
            return cache.download(self.url, self.cache_path(), self.sha256, force=True, progress=progress)
        return cache.ensure_file(self.url, self.cache_path(), self.sha256, progress=progress)


@lru_cache(maxsize=1)
def models() -> dict[str, ModelEntry]:
    raw = json.loads(resources.files("facebatch.nets").joinpath("models.json").read_text())
    return {name: ModelEntry(name=name, **fields) for name, fields in raw["models"].items()}


def get(name: str) -> ModelEntry | None:
    return models().get(name)


def url_cache_path(url: str) -> Path:
    """Cache path for an ad-hoc URL passed as --generator: keyed by the URL so two URLs never collide."""
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache.cache_dir() / "downloads" / f"{key}-{Path(urlparse(url).path).name or 'checkpoint'}"
