"""The boundaries file: one JSON document, readable by anything, never pickle.

Numbers are written as JSON floats from float64 values, which Python's ``json`` round-trips exactly,
so a boundary read back is bit-identical to the one written. A 40-attribute W+ file for an 18-layer
generator is about 15 MB: small enough that a second (npz) file is not worth its moving parts.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Mapping

from facebatch import __version__
from facebatch.checks import a_path
from facebatch.edit.boundary import Boundary
from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.atomic import atomic_write_bytes

FORMAT = "facebatch-boundaries"
VERSION = 1


def boundary_to_dict(b: Boundary) -> dict:
    return {
        "method": b.method,
        "space": b.space,
        "layers": list(b.layers),
        "num_ws": b.num_ws,
        "w_dim": b.w_dim,
        "normal": b.normal.tolist(),
        "intercept": b.intercept.tolist(),
        "generator_sha256": b.generator_sha256,
        "info": b.info,
    }


def boundary_from_dict(name: str, d: Mapping) -> Boundary:
    try:
        return Boundary(
            name=name,
            space=d["space"],
            layers=d["layers"],
            num_ws=int(d["num_ws"]),
            normal=d["normal"],
            intercept=d["intercept"],
            method=d.get("method", "svm"),
            generator_sha256=d.get("generator_sha256"),
            info=dict(d.get("info") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"boundary {name!r} in the boundaries file is malformed ({type(exc).__name__}: {exc})"
        ) from None


def save_boundaries(path: Path, boundaries: Iterable[Boundary], run: Mapping | None = None) -> None:
    """Write atomically; ``run`` records how they were made (command settings, inputs)."""
    items = list(boundaries)
    names = [b.name for b in items]
    if len(set(names)) != len(names):
        raise InputError(f"duplicate boundary names: {sorted({n for n in names if names.count(n) > 1})}")
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "facebatch_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run": dict(run or {}),
        "boundaries": {b.name: boundary_to_dict(b) for b in items},
    }
    # Not atomic_write_json: it sorts keys, and the order of boundaries (CSV columns, SeFa rank) matters to people.
    atomic_write_bytes(storage.location(path), (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode())


def check_writable(path: Path, overwrite: bool, update: bool) -> None:
    """Refuse to clobber an existing boundaries file unless --overwrite (replace) or --update (merge)."""
    if storage.location(path).exists() and not (overwrite or update):
        raise InputError(f"{path} exists; pass --update to add to it or --overwrite to replace it")


LOCK_WAIT_S = 60  # another writer of the same file: a merge takes a second, so a minute means it is stuck


def _writer_lock(path):
    """Held while the file is read, merged and written: a lock file beside it, or on an object store a lock
    object beside it; another writer is waited for up to LOCK_WAIT_S."""
    from filelock import FileLock

    name = f".{path.name}.lock"
    if storage.is_url(path):
        from facebatch.pipeline.rundir import object_lock

        return object_lock(path.parent, name, wait_s=LOCK_WAIT_S)
    return FileLock(str(path.with_name(name)), timeout=LOCK_WAIT_S)


def write_boundaries(path: Path, new: list[Boundary], run: Mapping, overwrite: bool, update: bool) -> None:
    """--update merges into an existing file (same names are replaced); otherwise refuse to clobber one."""
    from filelock import Timeout

    check_writable(path, overwrite, update)
    path = storage.location(path)
    # --update reads, merges and writes: two at once would each drop the other's boundaries.
    try:
        with _writer_lock(path):
            merged = new
            if update and path.exists():
                old = load_boundaries(path)
                names = {b.name for b in new}
                merged = [b for name, b in old.items() if name not in names] + new
            save_boundaries(path, merged, run)
    except Timeout:
        raise InputError(f"{path} is being written by another facebatch run; wait for it and rerun") from None


# A W+-space boundary of an 18x512 generator is ~200 KB of JSON; a thousand of them fit well below this.
MAX_BOUNDARIES_FILE_BYTES = 256 << 20


def load_boundaries(path: Path) -> dict[str, Boundary]:
    path = a_path(path, "path")
    if path.is_dir():
        path = path / "boundaries.json"
    if not path.exists():
        raise InputError(f"no boundaries file at {path}")
    from facebatch.pipeline.textfiles import read_small_text

    text = read_small_text(path, "boundaries file", limit=MAX_BOUNDARIES_FILE_BYTES)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not a facebatch boundaries file (not JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f'{path} is not a facebatch boundaries file (no "format": "{FORMAT}")')
    if int(doc.get("version", 0)) > VERSION:
        raise InputError(f"{path} has boundaries format version {doc['version']}; this facebatch reads up to {VERSION}")
    return {name: boundary_from_dict(name, d) for name, d in doc.get("boundaries", {}).items()}


# CelebA's attribute names -> (the shipped boundary's name, orientation): the built-in boundaries are named
# for what a user edits (age = 1 - p(Young), so + is older); models/celeba64/make_boundaries.py fits them so.
CELEBA_ALIASES: dict[str, tuple[str, int]] = {
    "Young": ("age", -1),
    "Male": ("gender", +1),
    "Smiling": ("smile", +1),
    "Eyeglasses": ("eyeglasses", +1),
    "Blond_Hair": ("hair_blond", +1),
    "Black_Hair": ("hair_black", +1),
    "Bangs": ("bangs", +1),
    "Mouth_Slightly_Open": ("mouth_open", +1),
    "Wearing_Lipstick": ("lipstick", +1),
}


def pick(boundaries: Mapping[str, Boundary], names: Iterable[str], what: str = "attribute") -> list[Boundary]:
    """Boundaries by name, with one clear error listing what the file has when a name is unknown.

    A CelebA attribute name the file lacks resolves to its shipped boundary (`Smiling` -> `smile`; `Young`
    -> `age` turned around, so + is younger), under the name asked for."""
    out = []
    for name in names:
        alias = CELEBA_ALIASES.get(name)
        if name not in boundaries and alias is not None and alias[0] in boundaries:
            found, sign = boundaries[alias[0]], alias[1]
            out.append(replace(found, name=name, normal=sign * found.normal, intercept=sign * found.intercept))
            continue
        if name not in boundaries:
            raise InputError(
                f"unknown {what} {name!r}: the boundaries file has {', '.join(sorted(boundaries)) or 'none'}"
            )
        out.append(boundaries[name])
    return out
