"""The one atomic writer: every file facebatch writes goes to a temp name, is fsynced, then renamed.

A reader sees the old file or the whole new one, never half. The temp file sits beside its target
(``.<name>.tmp-<pid>``: same filesystem, so ``os.replace`` is atomic; dot-prefixed, so Parquet
dataset readers skip it), and ``sweep_temps`` removes the ones a killed process left behind.
Tables, JSON, PNG bytes, per-shard noise archives and downloaded checkpoints all use it.

On an object store (a `facebatch.pipeline.storage` URL) there is no rename: the file is finished in a local
temp file and uploaded as one object, which becomes visible whole when the upload completes.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from facebatch.pipeline import storage

TEMP_MARK = ".tmp-"
TEMP_GLOB = f".*{TEMP_MARK}*"
_TEMP_NAME = re.compile(rf"^\..+{re.escape(TEMP_MARK)}\d+$")  # exactly what temp_path makes: .<name>.tmp-<pid>

# Files published while a `recording_writes()` block is active (one shard on a worker): the run's own
# record of what it wrote, so --overwrite removes those and nothing a user put beside them.
_WRITTEN: contextvars.ContextVar[list | None] = contextvars.ContextVar("facebatch_written", default=None)


@contextlib.contextmanager
def recording_writes() -> Iterator[list]:
    files: list = []
    token = _WRITTEN.set(files)
    try:
        yield files
    finally:
        _WRITTEN.reset(token)


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open that never follows a symlink at `path` (a link planted in OUT must not redirect a write)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link; facebatch does not write through links", str(path)) from None
        raise


def _create_temp(tmp: Path) -> None:
    """Create the temp file ourselves, exclusively and without following links: a stale temp of a
    recycled pid or a planted symlink at that name is removed (the link itself, never its target)."""
    for _ in range(3):
        try:
            os.close(open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            return
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    raise FileExistsError(errno.EEXIST, "cannot create a temp file", str(tmp))


def temp_path(path: Path) -> Path:
    """Where `path` is written before it is published: beside it, hidden, unique per process."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def _process_umask() -> int:
    """The umask, read without changing it (os.umask would, for a moment, for every thread)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


FILE_MODE = 0o666 & ~_process_umask()


def publish(tmp: Path, path: Path) -> None:
    """fsync the finished temp file, give it a plain file's mode, then rename it over `path` in one step.

    The mode is set here because some writers replace the temp with their own 0600 file (safetensors)."""
    fd = open_nofollow(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    note_published(Path(path))


def note_published(path) -> None:
    """Note a file this shard published (for writers that upload it themselves)."""
    written = _WRITTEN.get()
    if written is not None:
        written.append(path)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield the temp path for `path`; on success publish it, on any error delete it.

    For writers that stream (Parquet, zip archives, downloads, safetensors) instead of holding the
    whole file in memory. For an object-store `path` the temp file is local and is uploaded on success.
    """
    if storage.is_url(path):
        with _uploaded(path) as tmp:
            yield tmp
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        _create_temp(tmp)
        yield tmp
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _uploaded(target) -> Iterator[Path]:
    import tempfile

    fd, name = tempfile.mkstemp(prefix=".facebatch-upload-")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        storage.put(tmp, target)
        note_published(target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    if storage.is_url(path):
        storage.pipe(path, data)
        note_published(path)
        return
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def sweep_temps(folders: Iterable[Path], recursive: Iterable[Path] = ()) -> int:
    """Delete temp files left by killed writers in `folders` (and below each of `recursive`)."""
    removed = 0
    folders = [d for d in folders if not storage.is_url(d)]  # an object store never holds our temp files
    recursive = [d for d in recursive if not storage.is_url(d)]
    found = [p for d in folders if Path(d).is_dir() for p in Path(d).glob(TEMP_GLOB)]
    found += [p for d in recursive if Path(d).is_dir() for p in Path(d).rglob(TEMP_GLOB)]
    for path in found:
        if not _TEMP_NAME.match(path.name):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed
