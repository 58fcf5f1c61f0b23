"""Single files facebatch writes into a folder it does not own (a labels CSV, a score report): which are its own.

A run folder lists what it wrote in its markers (`RunDir`); a lone output file has no such record, so a
hidden ledger in its folder does that job: ``.facebatch-written.json`` maps each file name facebatch
wrote there to the sha256 of the bytes it wrote and the run (its run or work folder) that wrote them. A
file is a run's to replace while its content is still what that run wrote; a file the ledger does not
name, one the user has edited since, or another run's result is not, and replacing it needs an explicit
--overwrite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.atomic import atomic_write_json

LEDGER = ".facebatch-written.json"


def _ledger(folder: Path) -> dict[str, dict]:
    try:
        found = json.loads((folder / LEDGER).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(v, dict) and isinstance(v.get("sha256"), str)}


def _writer(path: Path, by: Path) -> str | None:
    """Why `path` is not `by`'s to replace ("" when it is, None when nothing is there)."""
    if not (path.exists() or path.is_symlink()):
        return None
    entry = _ledger(path.parent).get(path.name)
    if path.is_symlink() or not path.is_file() or entry is None or storage.sha256(path) != entry["sha256"]:
        return "is not a file facebatch wrote there"
    if entry.get("by") != _run_name(by):
        return f"is the result of another facebatch run ({entry.get('by')})"
    return ""


def _run_name(by) -> str:
    """How the ledger names a run: its absolute local path, or its URL."""
    loc = storage.location(by)
    return str(loc) if storage.is_url(loc) else str(loc.resolve())


def foreign_files(paths: Iterable[Path], by: Path) -> list[tuple[Path, str]]:
    """The paths that exist and are not, byte for byte, what the run `by` wrote there, each with the reason."""
    located = [storage.location(p) for p in paths]
    return [(p, why) for p in located if (why := _writer(p, by))]


def claim_files(paths: Iterable[Path], *, by: Path, overwrite: bool, way_out: str) -> None:
    """Refuse, in one line, to replace files that the run `by` (its run or work folder) did not write, unless
    `overwrite`; `way_out` says what the user can do instead (another output name, --overwrite and its cost)."""
    theirs = foreign_files(paths, by)
    for path, _ in theirs:
        if path.is_dir() and not path.is_symlink():
            raise InputError(f"{path} is a folder; facebatch writes a file of that name there: pick another output")
    if theirs and not overwrite:
        (first, why), more = theirs[0], f" (and {len(theirs) - 1} more)" if len(theirs) > 1 else ""
        raise InputError(f"{first} exists and {why}{more}; {way_out}")


def record_written(paths: Iterable[Path], by: Path) -> None:
    """Add the files the run `by` just wrote to their folders' ledgers."""
    by_folder: dict[Path, list[Path]] = {}
    for path in map(storage.location, paths):
        by_folder.setdefault(path.parent, []).append(path)
    for folder, files in by_folder.items():
        ledger = _ledger(folder)
        ledger.update({p.name: {"sha256": storage.sha256(p), "by": _run_name(by)} for p in files})
        atomic_write_json(folder / LEDGER, dict(sorted(ledger.items())))
