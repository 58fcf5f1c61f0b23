"""Small text files a user names (prompt lists, preset files): read with bounds, parsed strictly.

A path on the command line can name anything: a FIFO (opening it for reading waits for a writer, forever),
a device (/dev/zero never ends), a file of many GB. `read_small_text` opens without blocking, accepts a
regular file only and reads at most `limit` bytes. `load_yaml` refuses a mapping that gives one key twice:
PyYAML keeps the last of two equal keys without a word, so the first definition would silently be lost.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.discover import file_kind

MAX_TEXT_BYTES = 1 << 20  # a prompts or preset file is a few lines; past this it is not one


def read_small_text(path: Path, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of the regular file `path`, at most `limit` bytes; `what` names it in errors (e.g. --prompts)."""
    if storage.is_url(path):
        return _decode(_read_object(storage.location(path), what, limit), path, what)
    path = Path(path)

    def not_regular(mode: int) -> InputError:
        return InputError(f"{what} {path} is {file_kind(mode)}, not a regular file")

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        with contextlib.suppress(OSError):  # a socket cannot even be opened: say what it is
            mode = os.stat(path).st_mode
            if not stat.S_ISREG(mode):
                raise not_regular(mode) from None
        raise InputError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise not_regular(st.st_mode)
        too_big = InputError(f"{what} {path} is larger than {limit >> 10} KiB, the most such a file may hold")
        if st.st_size > limit:
            raise too_big
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # grew while being read
        raise too_big
    return _decode(data, path, what)


def _read_object(loc, what: str, limit: int) -> bytes:
    """An object's bytes, at most `limit`; missing, denied or unreachable is one line naming it."""
    with storage.remote_errors(loc, what):
        if not loc.is_file():
            raise InputError(f"no such {what}: {loc}")
        if storage.size(loc) <= limit:
            with loc.open("rb") as fh:
                data = fh.read(limit + 1)
        else:
            data = None
    if data is None or len(data) > limit:
        raise InputError(f"{what} {loc} is larger than {limit >> 10} KiB, the most such a file may hold")
    return data


def _decode(data: bytes, path, what: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader whose mappings refuse a key given twice (merge keys `<<` may still be overridden)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key, line = loader.construct_object(key_node, deep=True), key_node.start_mark.line + 1
        try:
            if key in seen:
                where = f"lines {seen[key]} and {line}" if seen[key] != line else f"line {line}"
                raise _DuplicateKey(f"{key!r} is given twice ({where})")
            seen[key] = line
        except TypeError:  # an unhashable key: the stock constructor says so
            continue
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(text: str, where: str) -> Any:
    """yaml.safe_load with duplicate keys refused; any problem is one InputError line that starts with `where`."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise InputError(f"{where}: {exc}; give each key once") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise InputError(f"{where} is not valid YAML: {problem}{at}") from None
