"""What a stage writes under OUT, and the bookkeeping files beside its table.

    OUT/_run.json                    plan, resolved config + hash, versions, seed, status
    OUT/<table>/part-NNNNN.parquet   data only, so pyarrow/pandas/dask read the folder as is
    OUT/_stats/<table>/part-NNNNN.json  per-shard marker, written LAST (img2dataset's done rule);
                                     kept out of the table folder, where pyarrow would choke on it
    OUT/_SUCCESS                     every shard finished
    OUT/.lock                        one client per OUT at a time
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from facebatch.errors import InputError

RUN_FILE = "_run.json"
SUCCESS_FILE = "_SUCCESS"
STATS_DIR = "_stats"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class OutLayout:
    out_dir: Path
    table: str

    @property
    def table_dir(self) -> Path:
        return self.out_dir / self.table

    @property
    def stats_dir(self) -> Path:
        return self.out_dir / STATS_DIR / self.table

    @property
    def run_file(self) -> Path:
        return self.out_dir / RUN_FILE

    @property
    def success_file(self) -> Path:
        return self.out_dir / SUCCESS_FILE

    def part(self, name: str) -> Path:
        return self.table_dir / f"{name}.parquet"

    def marker(self, name: str) -> Path:
        return self.stats_dir / f"{name}.json"

    def read_run(self) -> dict | None:
        if not self.run_file.exists():
            return None
        try:
            return json.loads(self.run_file.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.run_file} is unreadable ({exc}); use --overwrite to start again") from None

    def read_markers(self) -> dict[str, dict]:
        """Markers by shard name; an unreadable marker counts as absent (its shard is redone)."""
        found = {}
        if self.stats_dir.is_dir():
            for path in self.stats_dir.glob("part-*.json"):
                try:
                    found[path.stem] = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
        return found

    def remove_outputs(self, side_dirs: Sequence[str] = ()) -> None:
        """--overwrite: delete only what a facebatch run wrote here, never the rest of OUT."""
        for sub in (self.table, f"{STATS_DIR}/{self.table}", *side_dirs):
            shutil.rmtree(self.out_dir / sub, ignore_errors=True)
        for name in (RUN_FILE, SUCCESS_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.out_dir / name).unlink()

    def remove_stale_temps(self, side_dirs: Sequence[str] = ()) -> int:
        """Temp files left by killed workers (dot-prefixed, so readers never saw them)."""
        removed = 0
        flat = [(d, d.glob) for d in (self.out_dir, self.table_dir, self.stats_dir)]
        nested = [(self.out_dir / d, (self.out_dir / d).rglob) for d in side_dirs]  # e.g. reconstructions/<id dirs>
        for folder, find in flat + nested:
            if folder.is_dir():
                for path in find(".*.tmp-*"):
                    with contextlib.suppress(OSError):
                        path.unlink()
                        removed += 1
        return removed


@contextlib.contextmanager
def exclusive_lock(out_dir: Path) -> Iterator[None]:
    """Two clients on one OUT would redo each other's shards and clean each other's temp files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise InputError(f"{out_dir} is in use by another facebatch run ({holder}); wait for it or pick another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()
