"""The shard plan: fixed-size shards with zero-padded ids, and the hashes that make resume checkable.

img2dataset warns in its README that a resume is only right with "the same number_sample_per_shard and
the same input"; here that is a hash in `_run.json` and in every shard marker, checked before any work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Mapping, Sequence

from facebatch.errors import InputError

VERSIONED_PACKAGES = (
    "facebatch",
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "pyarrow",
    "pandas",
    "dask",
    "distributed",
)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


@dataclass(frozen=True)
class Shard:
    shard_id: int
    start: int  # index of the first item in the plan
    stop: int
    ids_hash: str  # sha256 of this shard's image_ids: a changed input invalidates its part

    @property
    def name(self) -> str:
        return shard_name(self.shard_id)

    def __len__(self) -> int:
        return self.stop - self.start


def shard_name(shard_id: int) -> str:
    return f"part-{shard_id:05d}"


def plan_shards(items: Sequence[Mapping[str, Any]], shard_size: int) -> list[Shard]:
    if shard_size < 1:
        raise InputError("--shard-size must be at least 1")
    ids = [str(item["image_id"]) for item in items]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise InputError(f"image_id {dup!r} appears more than once in the input")
    return [
        Shard(n, start, min(start + shard_size, len(ids)), digest(ids[start : start + shard_size]))
        for n, start in enumerate(range(0, len(ids), shard_size))
    ]


def plan_hash(shards: Sequence[Shard], shard_size: int) -> str:
    return digest({"shard_size": shard_size, "shards": [s.ids_hash for s in shards]})


def config_hash(stage: str, table: str, config: Mapping[str, Any]) -> str:
    return digest({"stage": stage, "table": table, "config": config})


def versions() -> dict[str, str]:
    """Installed versions, read from package metadata so nothing heavy is imported on the client."""
    found = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import platform

    found["python"] = platform.python_version()
    return found


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Human-readable `key: old -> new` lines, so a refused resume says what changed."""
    lines = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            lines += config_diff(a, b, f"{prefix}{key}.")
        elif canonical_json(a) != canonical_json(b):
            lines.append(f"{prefix}{key}: {_short(a)} -> {_short(b)}")
    return lines


def _short(value: Any, limit: int = 40) -> str:
    text = canonical_json(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
