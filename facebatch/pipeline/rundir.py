"""The run folder OUT: every name a stage writes there, and every reader looks for, is spelled here.

    OUT/_run.json                       plan, resolved config + hash, versions, seed, status
    OUT/<table>/part-NNNNN.parquet      data only, so pyarrow/pandas/dask read the folder as is
                                        (latents for project and sample, faces for align, manifest for augment
                                        and mix)
    OUT/_stats/<table>/part-NNNNN.json  per-shard marker, written LAST (a marker means a whole part);
                                        kept out of the table folder, where pyarrow would choke on it
    OUT/_SUCCESS                        every shard finished
    OUT/.lock                           one client per OUT at a time
    OUT/reconstructions/<image_id>.png  project --save-reconstructions
    OUT/noise/part-NNNNN.npz            project --save-noise, one archive per latents part
    OUT/images/...                      sample's PNGs; augment's edited PNGs; mix's images/<app>/<pair_id>/
    OUT/aligned/<image_id>.png          align's crops
    OUT/contact_sheets/<attr>.png       augment's sheets (mix: <app>.png)
    OUT/flags/, OUT/report/             score's outputs

Temp files are the atomic writer's (``.<name>.tmp-<pid>``); `remove_stale_temps` sweeps them.

OUT may be an object-store URL (`facebatch.pipeline.storage`): the same names, read and written through
fsspec; the lock is then an object (`object_lock`), and there are no temp files or empty folders to clean.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.atomic import open_nofollow, sweep_temps
from facebatch.pipeline.discover import not_a_folder
from facebatch.pipeline.records import RunRecord

RUN_FILE = "_run.json"
SUCCESS_FILE = "_SUCCESS"
STATS_DIR = "_stats"
LOCK_FILE = ".lock"
PART_NAME = re.compile(r"^part-\d{5,}\.parquet$")

LATENTS = "latents"  # the tables: project and sample write latents, align faces, augment and mix manifest, label labels
FACES = "faces"
MANIFEST = "manifest"
LABELS = "labels"
RECONSTRUCTIONS = "reconstructions"
NOISE = "noise"
IMAGES = "images"
ALIGNED = "aligned"
SHEETS = "contact_sheets"
FLAGS = "flags"
REPORT = "report"


@dataclass(frozen=True)
class RunDir:
    root: Path
    table: str = LATENTS

    @classmethod
    def of_part(cls, part: Path) -> RunDir:
        """The run a part file OUT/<table>/part-NNNNN.parquet belongs to."""
        part = storage.location(part)
        return cls(part.parent.parent, part.parent.name)

    @property
    def table_dir(self) -> Path:
        return self.root / self.table

    @property
    def stats_dir(self) -> Path:
        return self.root / STATS_DIR / self.table

    @property
    def run_file(self) -> Path:
        return self.root / RUN_FILE

    @property
    def success_file(self) -> Path:
        return self.root / SUCCESS_FILE

    @property
    def report_dir(self) -> Path:
        """OUT/report: where `score` writes its report unless told another folder."""
        return self.root / REPORT

    @property
    def flags_dir(self) -> Path:
        """OUT/flags: where `score` writes the flags table unless told another folder."""
        return self.root / FLAGS

    def folder(self, name: str) -> Path:
        """OUT/<name>: a side folder (images, aligned, reconstructions, ...)."""
        return self.root / name

    def part(self, name: str) -> Path:
        return self.table_dir / f"{name}.parquet"

    def marker(self, name: str) -> Path:
        return self.stats_dir / f"{name}.json"

    def reconstruction(self, image_id: str) -> Path:
        """OUT/reconstructions/<image_id>.png (the full id, so a.jpg and a.png never collide)."""
        return self.root / RECONSTRUCTIONS / f"{safe_relpath(image_id)}.png"

    def noise_part(self, part_name: str) -> Path:
        """OUT/noise/part-NNNNN.npz beside OUT/latents/part-NNNNN.parquet."""
        return self.root / NOISE / f"{part_name}.npz"

    def read_run(self) -> RunRecord | None:
        """The run's record (None: no _run.json); a one-line InputError when it is unreadable or not an object."""
        if not self.run_file.exists():
            return None
        try:
            record = json.loads(self.run_file.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{self.run_file} is unreadable ({exc}), so facebatch cannot tell what it wrote in {self.root}; "
                "pick another output folder, or move that one away"
            ) from None
        if not isinstance(record, dict):
            raise InputError(
                f"{self.run_file} is not a facebatch run record (a JSON {type(record).__name__}, not an object), so "
                f"facebatch cannot tell what it wrote in {self.root}; pick another output folder, or move that one away"
            )
        return RunRecord.from_json(record)

    def generator_path(self) -> str | None:
        """The generator file the run recorded (its `runtime`), if any; never raises."""
        try:
            record = self.read_run()
        except InputError:
            return None
        return record.runtime.get("generator_path") if record is not None else None

    def read_markers(self) -> dict[str, dict]:
        """Markers by shard name; an unreadable marker counts as absent (its shard is redone)."""
        found = {}
        if self.stats_dir.is_dir():
            for path in self.stats_dir.glob("part-*.json"):
                try:
                    marker = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                if isinstance(marker, dict):
                    found[path.stem] = marker
        return found

    def parts(self) -> list[Path]:
        """The table's parts, in shard order: OUT/<table>/part-NNNNN.parquet only (never a recursive search,
        which would merge a run with the runs or copies kept below it)."""
        if not self.table_dir.is_dir():
            return []
        return sorted(p for p in self.table_dir.iterdir() if PART_NAME.match(p.name) and p.is_file())

    def remove_outputs(self, side_dirs: Sequence[str] = ()) -> None:
        """--overwrite: delete only what the run's own records list (its parts, markers, the side files
        each marker names, _run.json, _SUCCESS, its temp files), then the folders that became empty.
        A file a user put anywhere in OUT stays, and so do the folders holding it."""
        if self.read_run() is None:  # no record of a facebatch run: nothing here is provably ours
            return
        for name, marker in self.read_markers().items():
            for rel in marker.get("files") or ():
                target = self.inside(rel)
                if target is not None:
                    _unlink(target)
            _unlink(self.part(name))
            _unlink(self.marker(name))
        if self.table_dir.is_dir() and not self.table_dir.is_symlink():  # parts a killed worker published unmarked
            for part in self.table_dir.iterdir():
                if PART_NAME.match(part.name):
                    _unlink(part)
        self.remove_stale_temps(side_dirs)
        for name in (RUN_FILE, SUCCESS_FILE):
            _unlink(self.root / name)
        for sub in (self.table, f"{STATS_DIR}/{self.table}", STATS_DIR, *side_dirs):
            _remove_empty_dirs(self.root / sub)

    def inside(self, rel: str | Path) -> Path | None:
        """OUT/rel when rel is a relative path that stays under OUT (no absolute path, no '..'), else None."""
        rel = Path(rel)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            return None
        return self.root / rel

    def remove_stale_temps(self, side_dirs: Sequence[str] = ()) -> int:
        """Temp files left by killed workers (dot-prefixed, so readers never saw them)."""
        return sweep_temps([self.root, self.table_dir, self.stats_dir], [self.root / d for d in side_dirs])

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """One client per OUT at a time (see `folder_lock`)."""
        return folder_lock(self.root)


@contextlib.contextmanager
def folder_lock(root: Path) -> Iterator[None]:
    """Hold root/.lock for as long as the block runs: every command that writes into a folder takes it, so two
    clients never redo each other's shards, clean each other's temp files or overwrite each other's result.
    The lock file is opened without following links: a symlink planted at root/.lock is refused.
    On an object store the lock is an object (`object_lock`)."""
    if storage.is_url(root):
        with object_lock(root):
            yield
        return
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise not_a_folder(root, "folder to write into")
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    try:
        fh = os.fdopen(open_nofollow(path, os.O_RDWR | os.O_CREAT), "r+")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path} is a symbolic link; facebatch will not follow it (remove it)") from None
        raise
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise InputError(
                f"{root} is in use by another facebatch run ({holder}); wait for it or pick another output"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()


# A lock object whose holder has not renewed it for this long is stale (its client died without removing it)
# and is taken over. The holder renews it every LOCK_RENEW_S, so a live run is never taken for dead.
def lock_stale_seconds() -> float:
    return float(os.environ.get("FACEBATCH_LOCK_STALE_S", 300))


@contextlib.contextmanager
def object_lock(root, name: str = LOCK_FILE, wait_s: float = 0.0) -> Iterator[None]:
    """The object-store form of `folder_lock`: OUT/.lock (or another `name`) is created with a conditional PUT
    (if-none-match, so of two clients exactly one succeeds), holds its owner (host, pid, a token) and when it
    was last renewed, and is renewed by a thread while the block runs. A lock not renewed for
    FACEBATCH_LOCK_STALE_S seconds (default 300; renewed five times as often) is taken over. A live holder is
    waited for up to `wait_s` seconds, then refused."""
    path = root / name
    token = uuid.uuid4().hex
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": token}
    with storage.remote_errors(root, "output"):
        storage.check_bucket(root, "output")
        _take_lock_object(path, owner, time.monotonic() + wait_s)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lock_stale_seconds() / 5):
            with contextlib.suppress(Exception):  # a missed renewal only shortens the grace period
                if _lock_holder(path).get("token") == token:
                    storage.pipe(path, _lock_body(owner))

    renewer = threading.Thread(target=renew, name="facebatch-lock", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=5)
        with contextlib.suppress(Exception):  # never mask the block's own error; a leftover lock goes stale
            if _lock_holder(path).get("token") == token:
                storage.remove(path)


def _lock_body(owner: dict) -> bytes:
    return json.dumps({**owner, "renewed_at": time.time()}).encode()


def _lock_holder(path) -> dict:
    storage.forget_listing(path)  # the object itself, never a cached listing that predates it
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        return {"renewed_at": 0}  # unreadable: treated as stale
    return holder if isinstance(holder, dict) else {"renewed_at": 0}


LOCK_POLL_S = 0.5


def _take_lock_object(path, owner: dict, wait_until: float) -> None:
    contested = 0  # the lock vanished or went stale under us: the race is decided again, a few times at most
    while True:
        if storage.create_new(path, _lock_body(owner)):  # the store arbitrates: one creator of two wins
            return
        holder = _lock_holder(path)
        age, stale = time.time() - float(holder.get("renewed_at") or 0), lock_stale_seconds()
        if holder and age < stale:
            if time.monotonic() < wait_until:
                time.sleep(LOCK_POLL_S)
                continue
            who = f"{holder.get('host', '?')} pid {holder.get('pid', '?')}"
            raise InputError(
                f"{path.parent} is in use by another facebatch run ({who}, renewed {age:.0f} s ago); wait for "
                f"it or pick another output (a lock not renewed for {stale:.0f} s is taken over)"
            )
        if contested == 3:
            raise InputError(f"{path.parent} is in use by another facebatch run (its lock changed hands as we took it)")
        contested += 1
        if holder:
            storage.remove(path)  # stale: its holder died (an empty holder: removed between our create and read)


def locate_table(path: Path, table: str = LATENTS, what: str = "table or folder") -> tuple[RunDir, Path]:
    """(run folder, table path) from what a user passes: OUT (holding <table>/), OUT/<table>, one part
    file, or a folder of Parquet files another tool wrote (then that folder is the run's root).

    A folder that is no run itself but holds facebatch runs below it (a parent of several OUTs) is refused:
    its runs may come from different generators, and a run is read by its record, not by a search."""
    path = storage.location(path, what)
    with storage.remote_errors(path, what):
        storage.check_bucket(path, what)
        return _locate_table(path, table, what)


def _locate_table(path, table: str, what: str) -> tuple[RunDir, Path]:
    if not (path.is_file() or path.is_dir()):
        raise not_a_folder(path, what)
    if path.is_dir() and (path / table).is_dir():
        return RunDir(path, table), path / table
    folder = path.parent if path.is_file() else path
    if folder.name == table:
        return RunDir(folder.parent, table), path
    if path.is_dir() and not (path / RUN_FILE).exists():
        runs = sorted(p.parent for p in path.rglob(RUN_FILE) if p.parent != path)
        if runs:
            shown = ", ".join(str(r) for r in runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
            raise InputError(f"{path} is not a run but holds {len(runs)} facebatch run(s) ({shown}); pass one of them")
    return RunDir(folder, table), path


def _unlink(path: Path) -> None:
    """Remove one file (a symlink itself, never what it points at); a folder or a missing file is left."""
    if storage.is_url(path):
        storage.remove(path)
        return
    with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError):
        if path.is_symlink() or path.is_file():
            path.unlink()


def _remove_empty_dirs(top: Path) -> None:
    """Remove `top` and the folders below it that are empty (bottom-up); never follows links, keeps any file."""
    if storage.is_url(top) or not top.is_dir() or top.is_symlink():  # an object store has no empty folders
        return
    for dirpath, dirnames, _ in os.walk(top, topdown=False):
        for name in dirnames:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(dirpath, name))  # fails (kept) unless empty; a link is not a dir here
    with contextlib.suppress(OSError):
        top.rmdir()


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_relpath(image_id: str) -> str:
    """An image id as a relative POSIX path that cannot leave the folder it is joined to: no root, no
    drive, no '..' or '.' parts, no empty parts, no control characters ('..' becomes '__')."""
    parts = []
    for part in _CONTROL.sub("_", str(image_id)).replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        parts.append("__" if part == ".." else part.replace(":", "_") if not parts else part)
    return "/".join(parts) or "_"


def output_names(ids: Sequence[str], suffix: str = ".png") -> dict[str, str]:
    """One relative output file name per id, unique by construction (case-insensitively, for macOS and
    Windows filesystems): the id with its extension replaced by `suffix` (a/x.jpg -> a/x.png) where that
    clashes with no other id of the set, else the whole id + suffix (a/x.jpg.png beside a/x.png.png), and
    a ~N counter as the last resort. Every name is a `safe_relpath`, so none leaves the output folder."""
    ids = list(dict.fromkeys(str(i) for i in ids))
    short = {i: _with_suffix(safe_relpath(i), suffix) for i in ids}
    counts: dict[str, int] = {}
    for name in short.values():
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    names: dict[str, str] = {}
    taken: set[str] = set()
    for i in ids:
        name = short[i] if counts[short[i].lower()] == 1 else safe_relpath(i) + suffix
        base, n = name, 1
        while name.lower() in taken:
            n += 1
            name = f"{base[: -len(suffix)] if suffix and base.endswith(suffix) else base}~{n}{suffix}"
        taken.add(name.lower())
        names[i] = name
    return names


def _with_suffix(rel: str, suffix: str) -> str:
    head, _, last = rel.rpartition("/")
    stem = last.rsplit(".", 1)[0] if "." in last.lstrip(".") else last
    return f"{head + '/' if head else ''}{stem or '_'}{suffix}"


def unique_ids(paths: Sequence[Path]) -> list[str]:
    """Ids for files named on the command line (possibly from different folders, absolute or with '..'):
    the shortest trailing part of each absolute path that is unique among them, e.g. photos/a.png and
    old/a.png for /x/photos/a.png and /y/old/a.png; relative, never absolute, never with '..'."""
    full = [Path(os.path.abspath(p)).parts[1:] or ("_",) for p in paths]
    ids: list[str] = []
    for parts in full:
        for k in range(1, len(parts) + 1):
            tail = parts[-k:]
            if sum(1 for other in full if other[-k:] == tail) == 1 or k == len(parts):
                ids.append("/".join(tail))
                break
    return ids
