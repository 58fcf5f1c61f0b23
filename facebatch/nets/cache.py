"""Where downloaded weights live, how they arrive (atomically, verified, once) and their sha256.

Many Dask workers may ask for the same model at the same moment: a file lock next to the
destination makes one of them download while the others wait and then find the file. A download
streams into the atomic writer's temp file (same folder), is fsynced and hashed, and is renamed into place only
when complete and (when the registry pins one) matching its sha256, so no reader ever sees half
a checkpoint. Unpinned downloads record their hash beside the file (`<file>.sha256`, the
`sha256sum -c` format) so `facebatch models verify` can later tell if the file changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from filelock import FileLock

from facebatch.errors import CheckpointError, ModelNotAvailable
from facebatch.pipeline.atomic import atomic_output, atomic_write_bytes

CHUNK = 1 << 20
_TRUE = {"1", "true", "yes", "on"}
# In-process memo of file hashes keyed by (real path, size, mtime_ns): a worker that loads the
# same multi-GB checkpoint for every shard hashes it once.
_HASHES: dict[tuple[str, int, int], str] = {}


def cache_dir() -> Path:
    """$FACEBATCH_CACHE_DIR, else $XDG_CACHE_HOME/facebatch, else ~/.cache/facebatch."""
    explicit = os.environ.get("FACEBATCH_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "facebatch"


def models_dir() -> Path:
    return cache_dir() / "models"


def offline() -> bool:
    return os.environ.get("FACEBATCH_OFFLINE", "").strip().lower() in _TRUE


def sidecar_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sha256")


def read_sidecar(path: Path) -> str | None:
    """The sha256 recorded when `path` was downloaded, or None."""
    try:
        text = sidecar_path(path).read_text().split()
    except OSError:
        return None
    return text[0].lower() if text else None


def sha256_of(path: Path, *, reuse: bool = True) -> str:
    """Hex sha256 of a file; with `reuse`, a file unchanged since its last hash (same size and mtime) is not re-read."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if reuse and key in _HASHES:
        return _HASHES[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def fetch_object(url: str, dest: Path) -> Path:
    """A checkpoint on an object store (s3://, gs://, az://, memory://) as a local file: copied into the cache
    once per version of the object (its ETag, size and modification time, recorded beside the copy), under a
    lock, through the atomic writer; each worker host fetches its own copy. Missing, denied or unreachable is
    one line."""
    from facebatch.pipeline import storage

    loc = storage.location(url, "checkpoint")
    with storage.remote_errors(loc, "checkpoint"):
        info = loc.fs.info(loc.path)
        if info.get("type") == "directory":
            raise CheckpointError(f"{url} is a folder, not a checkpoint file")
        version = {"url": url, **{k: str(info.get(k)) for k in ("ETag", "etag", "size", "LastModified", "mtime")}}
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        source_record = dest.with_name(f".{dest.name}.source.json")
        with FileLock(str(dest) + ".lock"):
            with contextlib.suppress(OSError, ValueError):
                if dest.is_file() and json.loads(source_record.read_text()) == version:
                    return dest
            with atomic_output(dest) as tmp:
                loc.fs.get_file(loc.path, str(tmp))
            atomic_write_bytes(source_record, json.dumps(version, sort_keys=True).encode())
    return dest


def not_available(url: str, dest: Path, why: str) -> ModelNotAvailable:
    return ModelNotAvailable(f"{why}: download {url} and put it at {dest} (or pass --generator PATH to a local file)")


def ensure_file(url: str, dest: Path, sha256: str | None = None, *, progress: bool = True) -> Path:
    """`dest` if it is there, else download it (unless offline). The cached file's hash is checked at load time."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    return download(url, dest, sha256, progress=progress)


def download(
    url: str,
    dest: Path,
    sha256: str | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `dest` once across processes: lock, re-check, stream to a temp file, verify, rename.

    Verified means complete, starting like weights (safetensors, a torch zip or a pickle: not the HTML page a
    proxy or a login wall answers with) and matching `sha256` when one is pinned. `force` downloads again over
    a cached file the same way: the file in place is replaced only by a whole, verified download, so a failed
    one (offline, cut short, the wrong bytes) leaves it as it was.
    """
    dest = Path(dest)
    if offline():
        raise not_available(
            url,
            dest,
            ("" if dest.is_file() else "model not in the cache and ") + "downloads are off (FACEBATCH_OFFLINE is set)",
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelNotAvailable(f"cannot create the model cache folder {dest.parent}: {exc.strerror}") from None
    with FileLock(str(dest) + ".lock"):
        if dest.is_file() and not force:
            return dest  # another worker finished it while we waited for the lock
        with atomic_output(dest) as tmp:
            digest = _stream(url, tmp, dest, timeout, progress)
            if sha256 and digest != sha256.lower():
                raise CheckpointError(
                    f"sha256 mismatch for {url}: expected {sha256.lower()}, got {digest}; the download was discarded"
                )
            if not _starts_like_weights(tmp):
                raise CheckpointError(
                    f"{url} sent something that is not a weights file (safetensors, torch zip or pickle); "
                    "the download was discarded"
                )
        atomic_write_bytes(sidecar_path(dest), f"{digest}  {dest.name}\n".encode())
        _HASHES[(str(dest.resolve()), dest.stat().st_size, dest.stat().st_mtime_ns)] = digest
    return dest


def _starts_like_weights(path: Path) -> bool:
    from facebatch.nets.checkpoints import sniff  # checkpoints reads through this module: imported when needed

    try:
        sniff(path)
    except CheckpointError:
        return False
    return True


def _stream(url: str, tmp: Path, dest: Path, timeout: float, progress: bool) -> str:
    """Copy the response body into `tmp`, hashing as it goes; any network failure is one ModelNotAvailable line."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as fh:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with _progress_bar(dest.name, total, progress) as advance:
                while chunk := resp.read(CHUNK):
                    fh.write(chunk)
                    digest.update(chunk)
                    advance(len(chunk))
            if total is not None and fh.tell() != total:
                raise not_available(url, dest, f"download ended early ({fh.tell()} of {total} bytes)")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = exc if isinstance(exc, urllib.error.HTTPError) else (getattr(exc, "reason", None) or exc)
        raise not_available(url, dest, f"download failed ({reason})") from None
    return digest.hexdigest()


@contextlib.contextmanager
def _progress_bar(label: str, total: int | None, enabled: bool):
    """A transient rich bar on stderr when it is a terminal; a no-op otherwise (logs, workers, tests)."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda n: None
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        *Progress.get_default_columns(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(escape(f"downloading {label}"), total=total)
        yield lambda n: bar.advance(task, n)


def cached_files() -> list[Path]:
    """Every checkpoint file under the models cache (not lock, sidecar or temp files)."""
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.suffix not in (".lock", ".sha256")
    )
