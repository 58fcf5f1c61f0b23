"""Training snapshots in a work folder: one complete snapshot always exists, and it is data.

Shared by the loops that train something resumably (StyleGAN-NADA, the encoder): a snapshot is a
`torch.save` of tensors and containers only (weights, optimiser state, the run's RNG state, counters),
read back with torch's weights-only loader; a new one is published atomically before the older ones go.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import torch

from facebatch.errors import InputError
from facebatch.pipeline.atomic import atomic_output, atomic_write_json
from facebatch.pipeline.discover import not_a_folder
from facebatch.pipeline.ownership import claim_files

SNAPSHOTS = "snapshots"


def snapshot_path(work: Path, iteration: int) -> Path:
    return Path(work) / SNAPSHOTS / f"snapshot-{iteration:06d}.pt"


def latest_snapshot(work: Path) -> Path | None:
    found = sorted((Path(work) / SNAPSHOTS).glob("snapshot-*.pt"))
    return found[-1] if found else None


def read_snapshot(path: Path) -> dict:
    """A snapshot is data: torch's weights-only loader refuses anything but tensors and containers."""
    with open(path, "rb") as fh:
        return torch.load(fh, map_location="cpu", weights_only=True)


def write_snapshot(work: Path, iteration: int, state: dict) -> Path:
    """Publish the new snapshot atomically, then drop the older ones (one complete snapshot always exists)."""
    path = snapshot_path(work, iteration)
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    for old in (Path(work) / SNAPSHOTS).glob("snapshot-*.pt"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def claim_work_dir(work: Path, run_key: dict, *, record: str, owned: Sequence[str], what: str, overwrite: bool) -> None:
    """A training work folder belongs to one run: `record` (a JSON file in it) holds the run's settings.

    A folder with snapshots of another run is refused, naming the settings that differ. `--overwrite` removes
    only what such a run writes there (the `owned` glob patterns, its snapshots and the record), never the
    folder or anything else in it.
    """
    work = Path(work)
    if work.exists() and not work.is_dir():
        raise not_a_folder(work, "work folder")
    run_key = json.loads(json.dumps(run_key, sort_keys=True, default=str))  # tuples as lists, as read back
    record_file = work / record
    if not overwrite and _read_record(record_file) is None:
        theirs = [p for pattern in (record, *owned) for p in sorted(work.glob(pattern))]
        if theirs:
            raise InputError(
                f"{work} holds {theirs[0].relative_to(work)}, which no facebatch {what} run recorded; pick another "
                "--work folder (--overwrite replaces such files)"
            )
    if overwrite:
        for pattern in (f"{SNAPSHOTS}/snapshot-*.pt", *owned):
            for path in work.glob(pattern):
                path.unlink(missing_ok=True)
        record_file.unlink(missing_ok=True)
    if latest_snapshot(work) is not None:
        recorded = _read_record(record_file) or {}
        if recorded.get("key") != _fingerprint(run_key):
            before = recorded.get("run", {})
            changed = sorted(k for k in set(run_key) | set(before) if run_key.get(k) != before.get(k))
            raise InputError(
                f"{work} holds snapshots of another {what} run (differs in {', '.join(changed) or 'settings'}); "
                "pass --overwrite to start over, or another --work"
            )
    atomic_write_json(record_file, {"key": _fingerprint(run_key), "run": run_key})


def claim_trained_output(out: Path, work: Path, overwrite: bool) -> None:
    """A trainer's output file may be replaced by the run that wrote it (the same work folder: a finished run
    continued to more iterations); any other file there needs --overwrite, which also starts the training over."""
    claim_files(
        [out],
        by=work,
        overwrite=overwrite,
        way_out="pick another -o or move that file away (--overwrite replaces it and starts the training over)",
    )


def _read_record(path: Path) -> dict | None:
    """The run record a trainer wrote ({"key", "run"}), or None for a missing, unreadable or foreign file."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and isinstance(found.get("key"), str) and "run" in found else None


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
