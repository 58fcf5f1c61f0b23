"""The one reader of facebatch's safetensors files: tensors plus a JSON config under the "facebatch" metadata key.

Generators (native_format), encoders, attribute predictors, CLIPs and NADA outputs all store their settings
this way; each kind checks its own config fields after this reader has turned an unreadable file or a
config that is not a JSON object into one CheckpointError line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from facebatch.errors import CheckpointError

META_KEY = "facebatch"


def read_config(path: Path, what: str = "") -> dict | None:
    """The file's facebatch config, read from the header only (no tensor is loaded); None when the file is no
    readable safetensors file or its metadata has no facebatch config; a config that is not a JSON object is
    a CheckpointError."""
    found = _open(path, tensors=False, quiet=True, what=what)
    return None if found is None else found[0]


def read_file(path: Path, what: str = "") -> tuple[dict | None, dict]:
    """(facebatch config or None when the metadata has none, every tensor by name). An unreadable or
    truncated file, or a config that is not a JSON object, is a CheckpointError naming the file."""
    found = _open(path, tensors=True, quiet=False, what=what)
    assert found is not None
    return found


def metadata_keys(path: Path) -> list[str]:
    """The metadata keys of a safetensors file (to say what a foreign file has instead of a config)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as fh:
        return sorted(fh.metadata() or {})


def _open(path: Path, *, tensors: bool, quiet: bool, what: str = "") -> tuple[dict | None, dict] | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            loaded = {name: fh.get_tensor(name) for name in fh.keys()} if tensors else {}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        if quiet:  # not a safetensors file: for a caller that is only asking what kind of file it is
            return None
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({exc})") from None
    if META_KEY not in meta:
        return None, loaded
    try:
        config = json.loads(meta[META_KEY])
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path}: the facebatch config in the safetensors metadata is not valid JSON") from None
    if not isinstance(config, dict):
        kind = f" of this {what}" if what else ""
        raise CheckpointError(f"{path}: the facebatch config{kind} is a JSON {type(config).__name__}, not an object")
    return config, loaded
