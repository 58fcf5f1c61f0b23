"""Typed stage settings that round-trip through JSON: what `_run.json` records and the config hash covers.

A stage's config (hashed: another value is another run) and its runtime (reaches the workers, not the hash)
are frozen dataclasses of JSON values built from `JsonRecord`; sequences are held as tuples, nested records
as records. `to_json()` is the dict `_run.json` records and the hash covers, keys in field order;
`from_json` reads it back, so ``type(r).from_json(r.to_json()) == r``.

Two field options keep the JSON what earlier runs recorded (a run resumes only while its hash is the same):
``json_name`` for a key that is not a Python name (label's ``from``) and ``omit_none`` for a key a record
holds only sometimes (project's ``encoder``, augment's ``shifts``).
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
class WorkerSetup(typing.Generic[C, T]):
    """What a stage's `setup` gets on a worker: its typed config and runtime, and where it computes."""

    config: C  # the stage's config (hashed)
    runtime: T  # the stage's runtime (paths, batch size: not hashed)
    device: str = "auto"  # torch device; the worker narrows the run's choice to its own before setup
    torch_threads: int | None = None  # torch threads of this worker process (None: torch's own choice)

    def on_device(self, device: str) -> WorkerSetup[C, T]:
        return dataclasses.replace(self, device=device)
