"""The library's arguments, checked where they come in: the functions `facebatch` re-exports refuse a wrong
argument in one InputError line, as the commands refuse a wrong option, instead of failing deep inside
(a TypeError, an IndexError) or, worse, running: a str given where a list is meant would otherwise be read
one character at a time, and an unknown keyword dropped. Numbers are checked by `facebatch.ranges`.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Callable

from facebatch.errors import InputError, shown

# Why a trainer's output and work folder are local
TRAINED_LOCALLY = (
    "training keeps resumable snapshots beside it; write it here and copy it to the bucket after, where -g and "
    "--encoder read it"
)


def what_it_is(value) -> str:
    """A value as an error quotes it: its type and its (short) repr."""
    return f"{type(value).__name__} {shown(value)}"


def a_path(value, name: str, what: str = "a path") -> Path:
    """A file or folder (or a registry name, which is a str too): a non-empty str or an os.PathLike such as
    pathlib.Path; an object-store URL (s3://...) or UPath comes back as a UPath."""
    from facebatch.pipeline import storage

    if storage.is_url(value) and (not isinstance(value, str) or value):
        return storage.location(value, name)
    path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(path, str) or not path:
        raise InputError(f"{name}: expected {what} (a str or pathlib.Path), got {what_it_is(value)}")
    return Path(path)


def a_local_path(value, name: str, why: str) -> Path:
    """A path that must be on this machine: an object-store URL is refused in one line saying why, never
    turned into a local folder named "s3:"."""
    from facebatch.pipeline import storage

    if storage.is_url(value):
        raise InputError(f"{name} {value}: needs a local path ({why})")
    return a_path(value, name)


def maybe_path(value, name: str) -> Path | None:
    return None if value is None else a_path(value, name)


def items(value, name: str, what: str) -> list:
    """The items of an argument that takes several: a list, a tuple or any other iterable. A lone str or path
    is refused rather than read one character at a time; so are a mapping and anything not iterable."""
    if isinstance(value, (str, bytes, os.PathLike)):
        raise InputError(
            f"{name}: expected a list of {what}, got the single {what_it_is(value)}; pass [{shown(value)}] for one"
        )
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise InputError(f"{name}: expected a list of {what}, got {what_it_is(value)}")
    return list(value)


def paths(value, name: str) -> list[Path]:
    """Several files or folders (images, runs), each through `a_path`."""
    return [a_path(v, f"{name}[{i}]") for i, v in enumerate(items(value, name, "paths"))]


def a_generator(value, name: str = "generator"):
    """A generator as the library takes one: loaded `Networks` (what `load_generator` returns, with `.G`), a
    registry name or a checkpoint path; checked before anything is loaded."""
    if not hasattr(value, "G") and not isinstance(value, (str, os.PathLike)):
        raise InputError(
            f"{name}: expected what load_generator returns, a registry name or a checkpoint path, got "
            f"{what_it_is(value)}"
        )
    return value


def a_text(value, name: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{name}: expected a text (a str), got {what_it_is(value)}")
    return value


def texts(value, name: str, what: str = "names") -> list[str]:
    """Several names (attributes, CLIP specs), each a str."""
    return [a_text(v, f"{name}[{i}]") for i, v in enumerate(items(value, name, what))]


def a_mapping(value, name: str) -> dict:
    """Options by name (overrides): a dict or other mapping; None is none."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InputError(f"{name}: expected a dict of options, got {what_it_is(value)}")
    return dict(value)


def an_instance(value, kind: type, name: str, source: str):
    """An object of `kind`; `source` says where one comes from (the error's way out)."""
    if not isinstance(value, kind):
        article = "an" if kind.__name__[0] in "AEIOU" else "a"
        raise InputError(f"{name}: expected {article} {kind.__name__} ({source}), got {what_it_is(value)}")
    return value


def known_options(given: Mapping, known: Iterable[str], what: str) -> None:
    """Keyword options a function passes on: an unknown one (a typo such as frame=3 for frames=3) is refused,
    not ignored, naming the nearest known one."""
    known = sorted(known)
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(f"{what}: unknown option {key!r} ({hint}it takes {', '.join(known)})")


def keyword_names(fn: Callable, *, skip: Iterable[str] = ()) -> list[str]:
    """The keyword parameters of `fn`: what `known_options` accepts for a function that passes options on."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(fn).parameters.values()
    return [p.name for p in params if p.kind in kinds and p.name not in set(skip)]
