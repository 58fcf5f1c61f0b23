"""Typed stage settings that round-trip through JSON: what `_run.json` records and the config hash covers.

A stage's config (hashed: another value is another run) and its runtime (reaches the workers, not the hash)
are frozen dataclasses of JSON values built from `JsonRecord`; sequences are held as tuples, nested records
as records. `to_json()` is the dict `_run.json` records and the hash covers, keys in field order;
`from_json` reads it back, so ``type(r).from_json(r.to_json()) == r``.

Two field options keep the JSON what earlier runs recorded (a run resumes only while its hash is the same):
``json_name`` for a key that is not a Python name (label's ``from``) and ``omit_none`` for a key a record
holds only sometimes (project's ``encoder``, augment's ``shifts``).

`RunRecord` is the other side: what a reader finds at the top level of a run's `_run.json`, whichever
stage and facebatch version wrote it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

R = TypeVar("R", bound="JsonRecord")
C = TypeVar("C")
T = TypeVar("T")


def record_field(default: Any = dataclasses.MISSING, *, json_name: str | None = None, omit_none: bool = False):
    """A field whose JSON key is `json_name`, and that `to_json` leaves out while it is None (`omit_none`)."""
    metadata = {"json_name": json_name, "omit_none": omit_none}
    return dataclasses.field(default=default, metadata=metadata)


def to_json(value: Any) -> Any:
    """The JSON form of a record (its `to_json()`), and of tuples, lists and dicts of them; other values as they are."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


class JsonRecord:
    """Base of a frozen dataclass of JSON values that writes itself to, and reads itself from, a JSON dict."""

    def to_json(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.metadata.get("json_name") or f.name] = to_json(value)
        return out

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any]) -> R:
        hints = typing.get_type_hints(cls)
        known = {f.metadata.get("json_name") or f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"{cls.__name__} has no field {unknown[0]!r}")
        return cls(**{f.name: _read(hints[f.name], data[key]) for key, f in known.items() if key in data})


def _read(hint: Any, value: Any) -> Any:
    """`value` (from JSON) as the field's type hint says: records and tuples rebuilt, the rest as it is."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _read(inner[0], value) if len(inner) == 1 else value
    if isinstance(hint, type) and hasattr(hint, "from_json"):
        # A record already read is kept: a record whose field's class depends on another field reads it first.
        return value if isinstance(value, hint) else hint.from_json(value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_read(args[0], v) for v in value)
        return tuple(_read(a, v) for a, v in zip(args, value))
    if origin is dict and args:
        return {k: _read(args[1], v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class RunRecord:
    """The top level of a run's `_run.json`, as the shard runner writes it (`runner._run_record`), for readers.

    The config and runtime stay mappings: which record reads them depends on the stage, and a reader of
    another command's run (label reading a project or sample run) must also read what other facebatch
    versions wrote, which the stage's strict record may refuse. `from_json` is lenient for the same reason:
    a key missing (or null) reads as its default, and every key not named here is the stage's own run facts.
    """

    stage: str | None = None  # the command that made the run: "project", "sample", "augment", ...
    table: str | None = None  # its table folder: "latents", "faces", "manifest", "labels"
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the stage's config (what is hashed)
    config_hash: str | None = None  # a rerun resumes only with the same one
    seed: int | None = None  # the config's seed, where the stage has one
    plan: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # items, shard_size, shards
    plan_hash: str | None = None  # a rerun resumes only with the same one
    runtime: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the stage's runtime (generator_path, ...)
    cluster: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the cluster options of the last start
    versions: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # package versions of the last start
    created_at: float | None = None  # the first start (kept across resumes)
    started_at: float | None = None  # the last start
    status: str | None = None  # running, complete, incomplete, interrupted or failed
    finished_at: float | None = None  # set when the last start ended
    summary: Mapping[str, Any] | None = None  # the last start's RunSummary, set when it ended
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the stage's facts: generator, ...

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        named = {f.name for f in dataclasses.fields(cls)} - {"metadata"}
        known = {key: value for key, value in data.items() if key in named and value is not None}
        return cls(**known, metadata={key: value for key, value in data.items() if key not in named})


@dataclass(frozen=True)
class WorkerSetup(typing.Generic[C, T]):
    """What a stage's `setup` gets on a worker: its typed config and runtime, and where it computes."""

    config: C  # the stage's config (hashed)
    runtime: T  # the stage's runtime (paths, batch size: not hashed)
    device: str = "auto"  # torch device; the worker narrows the run's choice to its own before setup
    torch_threads: int | None = None  # torch threads of this worker process (None: torch's own choice)

    def on_device(self, device: str) -> WorkerSetup[C, T]:
        return dataclasses.replace(self, device=device)
