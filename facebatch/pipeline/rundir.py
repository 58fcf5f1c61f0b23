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
from facebatch.pipeline.atomic import sweep_temps

RUN_FILE = "_run.json"
SUCCESS_FILE = "_SUCCESS"
STATS_DIR = "_stats"
LOCK_FILE = ".lock"

LATENTS = "latents"
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
        part = Path(part)
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

    def folder(self, name: str) -> Path:
        """OUT/<name>: a side folder (images, aligned, reconstructions, ...)."""
        return self.root / name

    def part(self, name: str) -> Path:
        return self.table_dir / f"{name}.parquet"

    def marker(self, name: str) -> Path:
        return self.stats_dir / f"{name}.json"

    def reconstruction(self, image_id: str) -> Path:
        """OUT/reconstructions/<image_id>.png (the full id, so a.jpg and a.png never collide)."""
        return self.root / RECONSTRUCTIONS / f"{image_id}.png"

    def noise_part(self, part_name: str) -> Path:
        """OUT/noise/part-NNNNN.npz beside OUT/latents/part-NNNNN.parquet."""
        return self.root / NOISE / f"{part_name}.npz"

    def read_run(self) -> dict | None:
        if not self.run_file.exists():
            return None
        try:
            return json.loads(self.run_file.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.run_file} is unreadable ({exc}); use --overwrite to start again") from None

    def generator_path(self) -> str | None:
        """The generator file the run recorded (its `runtime`), if any; never raises."""
        try:
            return ((self.read_run() or {}).get("runtime") or {}).get("generator_path")
        except InputError:
            return None

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
            shutil.rmtree(self.root / sub, ignore_errors=True)
        for name in (RUN_FILE, SUCCESS_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.root / name).unlink()

    def remove_stale_temps(self, side_dirs: Sequence[str] = ()) -> int:
        """Temp files left by killed workers (dot-prefixed, so readers never saw them)."""
        return sweep_temps([self.root, self.table_dir, self.stats_dir], [self.root / d for d in side_dirs])

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Two clients on one OUT would redo each other's shards and clean each other's temp files."""
        self.root.mkdir(parents=True, exist_ok=True)
        fh = open(self.root / LOCK_FILE, "a+")
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise InputError(
                    f"{self.root} is in use by another facebatch run ({holder}); wait for it or pick another --out"
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
            yield
        finally:
            fh.close()


def locate_table(path: Path, table: str = LATENTS, what: str = "table or folder") -> tuple[RunDir, Path]:
    """(run folder, table path) from what a user passes: OUT (holding <table>/), OUT/<table>, one part
    file, or a folder of Parquet files another tool wrote (then that folder is the run's root)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such {what}: {path}")
    if path.is_dir() and (path / table).is_dir():
        return RunDir(path, table), path / table
    folder = path.parent if path.is_file() else path
    if folder.name == table:
        return RunDir(folder.parent, table), path
    return RunDir(folder, table), path
