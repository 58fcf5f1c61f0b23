"""Where facebatch reads and writes: a local path, or an fsspec URL (s3://, gs://, az://, memory://, ...).

A local path (or a file:// URL) stays a `pathlib.Path`, so everything local behaves exactly as before. A URL
becomes a `upath.UPath`, which speaks the same pathlib API over fsspec (`/`, `exists`, `iterdir`, `glob`,
`read_text`, `open`, `unlink`), so the run folder, markers and readers are written once for both.
What an object store does differently lives here and in the atomic writer: an object becomes visible whole
on one PUT (no temp name, no rename), there is no fcntl lock (a lock object instead, see rundir), no
symlinks and no empty folders.

Credentials and endpoints come from fsspec itself (its config files in ``~/.config/fsspec/``, the
``FSSPEC_<PROTOCOL>_<KEY>`` environment variables, the cloud SDKs' own variables) or from
``--storage-option KEY=VALUE``. Those options go into fsspec's configuration for the protocols the command
names, in this process and, carried by each shard task, on every worker; they are never written to
``_run.json``, a marker, the report or a log line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import posixpath
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from facebatch.errors import InputError, first_line

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
LOCAL_PROTOCOLS = frozenset({"", "file", "local"})
CHUNK = 1 << 20

# What this process added to fsspec's configuration, by protocol: shipped to workers with every task.
_APPLIED: dict[str, dict[str, Any]] = {}


def protocol_of(value: Any) -> str:
    """'s3' for s3://bucket/key, '' for a local path."""
    protocol = getattr(value, "protocol", None)
    if isinstance(protocol, str):
        return protocol
    match = _SCHEME.match(str(value)) if isinstance(value, str) else None
    return match.group(1).lower() if match else ""


def is_url(value: Any) -> bool:
    """True for a remote location (an fsspec URL other than file://, or a remote UPath)."""
    return protocol_of(value) not in LOCAL_PROTOCOLS


def location(value: Any, what: str = "path") -> Any:
    """A local `Path` for a path or file:// URL; a `UPath` for any other fsspec URL (checked: the protocol is
    one fsspec knows and its package is installed)."""
    if is_url(value):
        if not isinstance(value, str):
            return value
        from upath import UPath

        _check_protocol(protocol_of(value), value, what)
        _apply_pending(protocol_of(value))
        return UPath(value)
    if isinstance(value, str) and value.lower().startswith("file://"):
        return Path(unquote(urlsplit(value).path))
    if type(value).__module__.startswith("upath"):  # a local UPath: the plain Path it names
        return Path(value.path)
    return Path(value)


def _check_protocol(protocol: str, url: str, what: str) -> None:
    import fsspec

    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise InputError(f"{what} {url}: unknown protocol {protocol}:// (fsspec knows no such filesystem)") from None
    except ImportError as exc:
        raise InputError(f"{what} {url}: {protocol}:// needs a package that is not installed ({exc})") from None


def absolute(value: Any) -> Any:
    """An absolute location: a URL as is, a local path made absolute (a task never carries a path a worker
    would resolve against its own working folder)."""
    loc = location(value)
    return loc if is_url(loc) else Path(loc).absolute()


def resolved(value: Any) -> str:
    """The location as recorded in a run's config: a URL as is, a local path resolved (links followed), so
    the same input named two ways is the same run."""
    loc = location(value)
    return str(loc) if is_url(loc) else str(Path(loc).resolve())


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """--storage-option KEY=VALUE pairs as fsspec keyword arguments: a value that reads as JSON (true, 3,
    {"a": 1}) is that value, anything else a string; a dotted key nests (client_kwargs.region_name=x)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = str(pair).partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise InputError(f"--storage-option {pair!r}: expected KEY=VALUE (e.g. endpoint_url=http://host:9000)")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node = options
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"--storage-option {pair!r}: {part} is given both as a value and as a group")
        node[leaf] = value
    return options


def configure(options: Mapping[str, Any] | Sequence[str] | None) -> None:
    """Storage options for the URLs this command opens (a mapping, or KEY=VALUE strings): each protocol gets
    them the first time `location` meets a URL of it, so s3 options never reach, say, a memory:// filesystem.
    Later filesystem instances use them (fsspec folds its configuration into the arguments, so an instance
    made with other options is never reused)."""
    global _PENDING
    if options is not None and not isinstance(options, Mapping):
        options = parse_options(list(options))
    _forget_applied()
    _PENDING = dict(options or {})


_PENDING: dict[str, Any] = {}
_BEFORE: dict[str, Any] = {}  # fsspec's own configuration of a protocol before we added to it


def _forget_applied() -> None:
    """Undo what an earlier `configure` added (a second command in one process starts from fsspec's own
    configuration, not from the first command's options)."""
    import fsspec.config

    for protocol, before in _BEFORE.items():
        if before is None:
            fsspec.config.conf.pop(protocol, None)
        else:
            fsspec.config.conf[protocol] = before
    _BEFORE.clear()
    _APPLIED.clear()


def _apply_pending(protocol: str) -> None:
    if _PENDING and protocol not in _APPLIED:
        apply({protocol: _PENDING})


def apply(by_protocol: Mapping[str, Mapping[str, Any]]) -> None:
    """Merge options into fsspec's configuration (runs on the client and, from each task, on every worker)."""
    import fsspec.config

    for protocol, options in (by_protocol or {}).items():
        if not options:
            continue
        if protocol not in _BEFORE:
            _BEFORE[protocol] = (
                json.loads(json.dumps(fsspec.config.conf[protocol])) if protocol in fsspec.config.conf else None
            )
        merged = _merge(fsspec.config.conf.get(protocol, {}), options)
        fsspec.config.conf[protocol] = merged
        _APPLIED[protocol] = _merge(_APPLIED.get(protocol, {}), options)


def applied() -> dict[str, dict[str, Any]]:
    """The options this process added, to ship to workers (in task memory only, never written to a file)."""
    return json.loads(json.dumps(_APPLIED))


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        nested = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = _merge(out[key], value) if nested else value
    return out


def secrets() -> list[str]:
    """The string values of the applied options (keys, tokens, endpoints): what no written file may contain."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for value in node.values():
                walk(value)
        elif isinstance(node, str) and node:
            found.append(node)

    walk(_APPLIED)
    return found


@contextlib.contextmanager
def remote_errors(loc: Any, what: str) -> Iterator[None]:
    """The store's refusals as one line naming the location: a bucket that does not exist, credentials it
    rejects, an endpoint nobody answers. Local paths pass through untouched (their OSErrors have their own
    handling)."""
    if not is_url(loc):
        yield
        return
    try:
        yield
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(f"{what} {loc}: not found ({first_line(exc)})") from None
    except PermissionError as exc:
        raise InputError(f"{what} {loc}: access denied ({first_line(exc)}); check the credentials") from None
    except Exception as exc:  # noqa: BLE001 - botocore/aiohttp/gcsfs errors have no common base but Exception
        why = first_line(exc, with_type=True)
        raise InputError(f"{what} {loc}: the store refused or did not answer ({why})") from None


def check_bucket(loc: Any, what: str) -> None:
    """Fail in one line before any work when the bucket (or container) of a remote location is missing,
    unreadable or unreachable; local paths are left to the usual checks."""
    if not is_url(loc):
        return
    bucket = loc.path.split("/", 1)[0]
    with remote_errors(loc, what):
        fs = loc.fs
        if not fs.exists(bucket):
            raise InputError(f"{what} {loc}: bucket {bucket!r} does not exist")
        fs.ls(bucket, detail=False)  # the credentials are checked here: exists() alone may say False on a 403


def sha256(loc: Any) -> str:
    """Hex sha256 of a file or object's bytes, streamed."""
    digest = hashlib.sha256()
    with location(loc).open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def size(loc: Any) -> int:
    return int(location(loc).stat().st_size)


def put(local: Path, target: Any) -> None:
    """Upload a finished local file as one object: visible whole or not at all (S3's multipart upload also
    appears only when it completes), with no temp object and no rename."""
    target.fs.put_file(str(local), target.path)
    forget_listing(target)


def pipe(target: Any, data: bytes) -> None:
    """Write bytes as one object in one PUT."""
    target.fs.pipe_file(target.path, data)
    forget_listing(target)


def remove(target: Any) -> None:
    """Delete one object; a missing one is fine."""
    with contextlib.suppress(FileNotFoundError):
        target.fs.rm_file(target.path)
    forget_listing(target)


def create_new(target: Any, data: bytes) -> bool:
    """Create an object only if none exists (a conditional PUT: S3 If-None-Match, GCS ifGenerationMatch=0,
    Azure If-None-Match): True when this call created it, False when the object was already there."""
    try:
        with target.fs.open(target.path, "xb") as fh:
            fh.write(data)
    except FileExistsError:
        return False
    finally:
        forget_listing(target)
    return True


def forget_listing(target: Any) -> None:
    """Drop the cached listing of an object's folder: adlfs keeps a folder's listing when it writes into it,
    and then answers that the object just written does not exist."""
    target.fs.invalidate_cache(posixpath.dirname(target.path))


def relative_to(path: Any, root: Any) -> str | None:
    """`path` relative to `root` as POSIX text, or None when it is not below it (works for URLs and paths)."""
    if is_url(root) != is_url(path):
        return None
    if is_url(root):
        base, full = str(root).rstrip("/") + "/", str(path)
    else:
        import os

        base, full = os.path.abspath(root) + os.sep, os.path.abspath(path)
    if not full.startswith(base):
        return None
    return Path(full[len(base) :]).as_posix()
