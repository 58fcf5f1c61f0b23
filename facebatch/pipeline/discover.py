"""Find the images under a folder: recursive, symlinks followed without looping, stable order.

`image_id` is the POSIX path relative to the root: the key that stays the same across reruns,
machines and shard sizes. Hidden files and folders (".thumbnails", ".ipynb_checkpoints") are skipped.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import Iterable

from facebatch.errors import FacebatchWarning, InputError
from facebatch.pipeline import storage

_SUFFIX_ORDER = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")  # as error messages list them
IMAGE_SUFFIXES = frozenset(_SUFFIX_ORDER)


def no_images(root: Path) -> InputError:
    """The one error for a folder with nothing to process, naming the extensions that count."""
    return InputError(f"no images ({', '.join(s[1:] for s in _SUFFIX_ORDER)}) under {root}")


def file_kind(mode: int) -> str:
    """What a file is, for messages ("a FIFO", "a folder", "a file", ...), from its st_mode."""
    for test, name in (
        (stat.S_ISREG, "a file"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "a special file"


def not_a_folder(path: Path, what: str = "folder") -> InputError:
    """The error for a path that is not the folder asked for: missing, or a FIFO, device or socket said as such."""
    if storage.is_url(path):
        return InputError(f"no such {what}: {path}" if not path.exists() else f"{path} is not a {what}")
    path = Path(path)
    if not path.exists():
        return InputError(f"no such {what}: {path}")
    return InputError(f"{path} is {file_kind(path.stat().st_mode)}, not a {what}")


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def discover_images(root: Path, exclude: Iterable[Path] = ()) -> list[dict]:
    """Items `{"image_id", "path"}` sorted by image_id; `exclude` holds folders to leave out (e.g. OUT)."""
    root = storage.location(root, "input")
    if storage.is_url(root):
        with storage.remote_errors(root, "input"):
            storage.check_bucket(root, "input")
            return _discover_objects(root, exclude)
    if root.is_file():
        if not is_image_name(root.name):
            raise InputError(f"{root} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return [{"image_id": root.name, "path": str(root.resolve())}]
    if not root.is_dir():
        raise not_a_folder(root, "folder or image file")
    skip = {_identity(p) for p in exclude if not storage.is_url(p) and Path(p).is_dir()}
    found: dict[str, str] = {}
    seen_dirs: set[tuple[int, int]] = set()
    # os.walk(followlinks=True) alone recurses forever on a link to an ancestor; remembering each
    # directory's (device, inode) visits every real directory once, whatever links point at it.
    skipped: list[str] = []

    def unreadable(exc: OSError) -> None:
        skipped.append(f"{exc.filename}: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable):
        ident = _identity(Path(dirpath))
        if ident in seen_dirs or ident in skip:
            dirnames[:] = []
            continue
        seen_dirs.add(ident)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.startswith(".") or not is_image_name(name):
                continue
            path = Path(dirpath) / name
            if not path.exists():  # a broken symlink: nothing to read, but said below
                skipped.append(f"{path}: broken link")
                continue
            # a FIFO, socket or device named like an image stays an item: its error row says what it is
            found[(rel_dir / name).as_posix()] = str(path.absolute())
    if skipped:  # never silently fewer images: say which folders were left out, and why
        shown = "; ".join(skipped[:3]) + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        warnings.warn(
            FacebatchWarning(f"skipped {len(skipped)} unreadable path(s) under {root}: {shown}"), stacklevel=2
        )
    return [{"image_id": image_id, "path": found[image_id]} for image_id in sorted(found)]


def _discover_objects(root, exclude: Iterable) -> list[dict]:
    """The images below a URL prefix (one listing; an object store has no links to loop on). Item paths are
    full URLs, which each worker opens through fsspec itself."""
    if root.is_file():
        if not is_image_name(root.name):
            raise InputError(f"{root} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return [{"image_id": root.name, "path": str(root)}]
    prefix = root.path.rstrip("/") + "/"
    skip = [str(storage.location(e)).rstrip("/") + "/" for e in exclude if storage.is_url(e)]
    scheme = f"{root.protocol}://"
    found = {}
    for key in root.fs.find(prefix):
        rel = key[len(prefix) :] if key.startswith(prefix) else None
        url = scheme + key
        if not rel or any(url.startswith(s) for s in skip):
            continue
        parts = rel.split("/")
        if any(part.startswith(".") for part in parts) or not is_image_name(parts[-1]):
            continue
        found[rel] = url
    if not found and not root.exists():
        raise not_a_folder(root, "folder or image file")
    return [{"image_id": image_id, "path": found[image_id]} for image_id in sorted(found)]


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino
