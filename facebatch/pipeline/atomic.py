"""The one atomic writer: every file facebatch writes goes to a temp name, is fsynced, then renamed.

A reader sees the old file or the whole new one, never half. The temp file sits beside its target
(``.<name>.tmp-<pid>``: same filesystem, so ``os.replace`` is atomic; dot-prefixed, so Parquet
dataset readers skip it), and ``sweep_temps`` removes the ones a killed process left behind.
Tables, JSON, PNG bytes, per-shard noise archives and downloaded checkpoints all use it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

TEMP_MARK = ".tmp-"
TEMP_GLOB = f".*{TEMP_MARK}*"


def temp_path(path: Path) -> Path:
    """Where `path` is written before it is published: beside it, hidden, unique per process."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def publish(tmp: Path, path: Path) -> None:
    """fsync the finished temp file, then rename it over `path` in one step."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield the temp path for `path`; on success publish it, on any error delete it.

    For writers that stream (Parquet, zip archives, downloads, safetensors) instead of holding the
    whole file in memory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def sweep_temps(folders: Iterable[Path], recursive: Iterable[Path] = ()) -> int:
    """Delete temp files left by killed writers in `folders` (and below each of `recursive`)."""
    removed = 0
    found = [p for d in folders if Path(d).is_dir() for p in Path(d).glob(TEMP_GLOB)]
    found += [p for d in recursive if Path(d).is_dir() for p in Path(d).rglob(TEMP_GLOB)]
    for path in found:
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed
