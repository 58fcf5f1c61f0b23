"""Named checkpoints (models.json): official downloads in the cache, and the small built-in models.

A name is a promise of a URL, a resolution and, where someone hashed the real file, a sha256.
Entries without a pinned sha256 are trusted on first download: the hash is recorded beside
the file and `facebatch models verify` compares later reads against it.
A built-in entry (`builtin`: a path inside the facebatch.models package) ships with facebatch,
is always pinned, and needs no download; `boundaries` names the editing directions fitted for it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

from facebatch.errors import CheckpointError, ModelNotAvailable
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
    kind: str = "generator"  # generator | attribute-predictor | clip | encoder
    builtin: str | None = None  # path inside the facebatch.models package
    boundaries: str | None = None  # built-in boundaries file fitted for this generator (same package)
    encoder: str | None = None  # registry name of the encoder trained for this generator
    # The projection preset used for this generator when none is given (chosen from bench/encoder.py's figures).
    default_preset: str | None = None

    @property
    def filename(self) -> str:
        return Path(urlparse(self.url).path).name

    def cache_path(self) -> Path:
        """Where the file is (or will be) cached: one folder per name keeps the upstream file name."""
        if self.builtin:
            return builtin_path(self.builtin)
        return cache.models_dir() / self.name / self.filename

    def boundaries_path(self) -> Path | None:
        return builtin_path(self.boundaries) if self.boundaries else None

    def is_cached(self) -> bool:
        return self.cache_path().is_file()

    def expected_sha256(self) -> str | None:
        """The pinned hash, else the one recorded at download (trust on first use)."""
        return self.sha256 or cache.read_sidecar(self.cache_path())

    def fetch(self, *, force: bool = False, progress: bool = True) -> Path:
        if self.builtin:
            return self._checked_builtin()
        if force:
            return cache.download(self.url, self.cache_path(), self.sha256, force=True, progress=progress)
        return cache.ensure_file(self.url, self.cache_path(), self.sha256, progress=progress)

    def _checked_builtin(self) -> Path:
        """The packaged file, refused when it no longer matches its pin (a damaged or edited install)."""
        path = self.cache_path()
        if not path.is_file():
            raise ModelNotAvailable(f"built-in model {self.name} is missing from this install (expected {path})")
        digest = cache.sha256_of(path)
        if digest != self.sha256:
            raise CheckpointError(
                f"built-in model {self.name} at {path} does not match its pinned sha256 ({digest[:12]} != "
                f"{str(self.sha256)[:12]}); reinstall facebatch"
            )
        return path


def builtin_path(relative: str) -> Path:
    """A file of the facebatch.models package (the repository's models/ folder)."""
    return Path(str(resources.files("facebatch.models").joinpath(relative)))


@lru_cache(maxsize=1)
def models() -> dict[str, ModelEntry]:
    raw = json.loads(resources.files("facebatch.nets").joinpath("models.json").read_text())
    return {name: ModelEntry(name=name, **fields) for name, fields in raw["models"].items()}


def get(name: str) -> ModelEntry | None:
    return models().get(name)


def shipped_boundaries(generator_sha256: str | None) -> tuple[ModelEntry, Path] | None:
    """(entry, boundaries file) of the built-in generator with this sha256 that ships boundaries, else None."""
    if not generator_sha256:
        return None
    for entry in models().values():
        if entry.boundaries and entry.sha256 == generator_sha256:
            path = entry.boundaries_path()
            if path is not None and path.is_file():
                return entry, path
    return None


def generator_of(sha256: str | None) -> ModelEntry | None:
    """The registry generator whose pinned file has this sha256, else None."""
    for entry in models().values():
        if sha256 and entry.kind == "generator" and entry.sha256 == sha256:
            return entry
    return None


def encoder_of(generator_sha256: str | None) -> ModelEntry | None:
    """The encoder entry a registry generator with this sha256 names, else None."""
    for entry in models().values():
        if generator_sha256 and entry.encoder and entry.sha256 == generator_sha256:
            return models().get(entry.encoder)
    return None


def url_cache_path(url: str) -> Path:
    """Cache path for an ad-hoc URL passed as --generator: keyed by the URL so two URLs never collide."""
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache.cache_dir() / "downloads" / f"{key}-{Path(urlparse(url).path).name or 'checkpoint'}"
