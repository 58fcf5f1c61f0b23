"""The one reader of a latents table, for editing, scoring and notebooks alike.

`open_latents(path)` accepts what users pass (OUT, OUT/latents, one part file, or a folder of
Parquet files another tool wrote) and gives three views of the same table:

- `read()`: everything at once, latents as shaped ``(N, num_ws, w_dim)`` arrays (notebooks, tests);
- `scalars()`: the scalar columns only, part by part (scoring: a million W+ codes would not fit);
- `index()`: ids and status first, then `gather` streams the latent column in record batches,
  keeping only the rows asked for (boundary fitting, augment: 500k codes of 18x512 are 18 GB).

A table written by another tool keeps working: without a `status` column every row is ok, and the
generator's sha256 is found under the keys other tools use for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facebatch.errors import InputError
from facebatch.nets.cache import sha256_of
from facebatch.pipeline import storage
from facebatch.pipeline.discover import not_a_folder
from facebatch.pipeline.rundir import LATENTS, RunDir, locate_table
from facebatch.pipeline.table import (
    SHAPE_KEY,
    column_to_numpy,
    field_shape,
    flat_rows,
    parquet_source,
    read_parquet,
    reading_parquet,
    run_metadata,
)

PART_COLUMN = "_part"


def parquet_files(path: Path) -> list[Path]:
    """Data files of a table folder (or the file itself): a facebatch run's parts by name, else (a table
    another tool wrote, maybe partitioned into folders) every .parquet below it, skipping _/. prefixed ones."""
    path = storage.location(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise not_a_folder(path, "table or folder")
    run = RunDir.of_part(path / "part-00000.parquet")
    if run.run_file.exists():
        return run.parts()
    return sorted(
        p for p in path.rglob("*.parquet") if not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts)
    )


def _sha256(path) -> str:
    return storage.sha256(path) if storage.is_url(path) else sha256_of(path)


def check_parts_unchanged(run: RunDir, files: Sequence[Path]) -> None:
    """A part whose content no longer matches the hash its marker recorded was changed after facebatch
    wrote it (edited in place, same size): refuse it rather than score or edit what the run never made."""
    markers = run.read_markers() if run.run_file.exists() else {}
    for path in files:
        expected = (markers.get(path.stem) or {}).get("part_sha256")
        if expected and str(path.parent) == str(run.table_dir) and _sha256(path) != expected:
            raise InputError(
                f"{path} was changed after facebatch wrote it (its content no longer matches its marker); "
                "rerun the command that made the run to redo that part"
            )


def generator_sha256(meta: dict) -> str | None:
    """The generator's sha256 from a table's metadata: facebatch's key, or the ones other tools use."""
    for key in ("generator_sha256", "model_sha256", "sha256"):
        if isinstance(meta.get(key), str):
            return meta[key]
    for key in ("generator", "model", "config"):
        sub = meta.get(key)
        if isinstance(sub, dict):
            for inner in ("generator_sha256", "sha256"):
                if isinstance(sub.get(inner), str):
                    return sub[inner]
    return None


@dataclass
class LatentTable:
    """A whole table read back: scalar columns as a DataFrame, latent columns as shaped arrays."""

    frame: pd.DataFrame
    latents: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def latent(self, name: str = "w") -> np.ndarray:
        if name not in self.latents:
            raise InputError(f"the table has no latent column {name!r} (has: {sorted(self.latents) or 'none'})")
        return self.latents[name]


@dataclass
class LatentIndex:
    """Where every row of a table is (file, row in file), its id and whether its latent is usable."""

    files: list[Path]
    file_of_row: np.ndarray  # index into files
    row_in_file: np.ndarray
    image_ids: np.ndarray  # str objects
    ok: np.ndarray  # status == "ok" and the latent present
    column: str
    shape: tuple[int, ...]  # (num_ws, w_dim)
    metadata: dict
    run: RunDir | None = None

    @property
    def num_ws(self) -> int:
        return self.shape[0]

    @property
    def w_dim(self) -> int:
        return self.shape[1]

    @property
    def generator_sha256(self) -> str | None:
        return generator_sha256(self.metadata)


@dataclass
class LatentsSource:
    run: RunDir  # the run folder: reconstructions, noise and _run.json live under it
    path: Path  # the table folder (or one Parquet file)
    files: list[Path]
    schema: pa.Schema  # of the first part

    @property
    def metadata(self) -> dict:
        return run_metadata(self.schema)

    @property
    def generator_sha256(self) -> str | None:
        return generator_sha256(self.metadata)

    def read(self, columns: Iterable[str] | None = None) -> LatentTable:
        """The whole table; latent columns come back shaped."""
        wanted = list(columns) if columns is not None else None
        frames, shaped = [], {}
        for path in self.files:  # part by part: parts written before latents were nested read beside newer ones
            with reading_parquet(path):
                table = read_parquet(path, wanted)
            scalar_cols = []
            for fld in table.schema:
                src = self.schema.field(fld.name) if fld.name in self.schema.names else fld
                if field_shape(src) is not None:
                    one = pa.schema([fld.with_metadata(src.metadata)])
                    t = pa.table({fld.name: table.column(fld.name)}, schema=one)
                    shaped.setdefault(fld.name, []).append(column_to_numpy(t, fld.name))
                else:
                    scalar_cols.append(fld.name)
            frames.append(table.select(scalar_cols).to_pandas())
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        latents = {name: np.concatenate(arrays) for name, arrays in shaped.items()}
        return LatentTable(frame=frame, latents=latents, metadata=self.metadata)

    def scalar_numeric_columns(self) -> list[str]:
        names = []
        for fld in self.schema:
            shaped = fld.metadata and SHAPE_KEY in fld.metadata
            if not shaped and (pa.types.is_floating(fld.type) or pa.types.is_integer(fld.type)):
                names.append(fld.name)
        return names

    def scalars(self, columns: Sequence[str]) -> pd.DataFrame:
        """The given scalar columns of every part, plus PART_COLUMN; a table without status is all ok."""
        frames = []
        for path in self.files:
            with reading_parquet(path):
                part = pq.ParquetFile(
                    parquet_source(path)
                )  # one footer read per part (thousands of parts in a large run)
            have = set(part.schema_arrow.names)
            missing = [c for c in columns if c not in have]
            if missing:
                raise InputError(
                    f"{path} lacks column(s) {', '.join(missing)} that {self.files[0].name} has: mixed runs?"
                )
            with reading_parquet(path):
                frame = part.read(columns=list(columns)).to_pandas()  # scalar columns only: nothing to reshape
            frame[PART_COLUMN] = path.relative_to(self.path).as_posix() if self.path.is_dir() else path.name
            frames.append(frame)
        frame = pd.concat(frames, ignore_index=True)
        if "status" not in frame:
            frame["status"] = "ok"  # a table without per-row status (e.g. written by another tool) is all ok
        if "error" not in frame:
            frame["error"] = None
        return frame

    def index(self, column: str = "w") -> LatentIndex:
        schema, first = self.schema, self.files[0]
        if column not in schema.names:
            raise InputError(f"{first} has no latent column {column!r} (columns: {', '.join(schema.names)})")
        shape = field_shape(schema.field(column))
        if shape is None or len(shape) != 2:
            raise InputError(f"column {column!r} in {first} is not a [num_ws, w_dim] latent column (shape {shape})")
        if "image_id" not in schema.names:
            raise InputError(f"{first} has no image_id column")
        ids, ok, which, rows = [], [], [], []
        for i, f in enumerate(self.files):
            names = ["image_id", column] + (["status"] if "status" in schema.names else [])
            with reading_parquet(f):
                t = read_parquet(f, names)
                n = t.num_rows
                valid = t.column(column).is_valid().to_numpy(zero_copy_only=False)
                if "status" in t.column_names:
                    valid &= np.asarray(t.column("status").to_pylist(), dtype=object) == "ok"
                ids.append(np.asarray(t.column("image_id").to_pylist(), dtype=object))
            ok.append(valid)
            which.append(np.full(n, i, dtype=np.int64))
            rows.append(np.arange(n, dtype=np.int64))
        return LatentIndex(
            files=self.files,
            file_of_row=np.concatenate(which),
            row_in_file=np.concatenate(rows),
            image_ids=np.concatenate(ids),
            ok=np.concatenate(ok),
            column=column,
            shape=tuple(shape),
            metadata=self.metadata,
            run=self.run,
        )


def open_latents(path: Path, table: str = LATENTS, what: str = "table or folder") -> LatentsSource:
    run, table_path = locate_table(path, table, what)
    files = parquet_files(table_path)
    if not files:
        raise InputError(
            f"{table_path} holds no {table}/ table and no Parquet files: "
            "pass a `facebatch project` or `facebatch sample` output folder"
        )
    check_parts_unchanged(run, files)
    with reading_parquet(files[0]):
        schema = pq.read_schema(parquet_source(files[0]))
        run_metadata(schema)  # read again on every use: a damaged one is refused here, naming the file
    return LatentsSource(run=run, path=table_path, files=files, schema=schema)


def read_latent_table(path: Path, columns: Iterable[str] | None = None) -> LatentTable:
    """Read a run (OUT), its table folder or one part written by facebatch; latent columns come back shaped."""
    return open_latents(path).read(columns)


def read_index(path: Path, column: str = "w") -> LatentIndex:
    return open_latents(path).index(column)


def read_rows(
    files: list[Path],
    column: str,
    shape: tuple[int, ...],
    file_of_row: np.ndarray,
    row_in_file: np.ndarray,
    reduce: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Latents of the given (file, row) pairs in that order, each passed through ``reduce`` batch by batch."""
    reduce = reduce or (lambda x: x)
    out: np.ndarray | None = None
    for fi in np.unique(file_of_row):
        want = np.flatnonzero(file_of_row == fi)
        wanted_rows = row_in_file[want]
        order = np.argsort(wanted_rows, kind="stable")
        wanted_sorted, dest_sorted = wanted_rows[order], want[order]
        start = 0
        with reading_parquet(files[int(fi)]):
            for batch in pq.ParquetFile(parquet_source(files[int(fi)])).iter_batches(
                columns=[column], batch_size=batch_size
            ):
                stop = start + batch.num_rows
                lo, hi = np.searchsorted(wanted_sorted, [start, stop])
                if hi > lo:
                    flat = flat_rows(batch.column(0))
                    picked = flat[wanted_sorted[lo:hi] - start].reshape((hi - lo,) + tuple(shape))
                    reduced = np.asarray(reduce(picked.astype(np.float32, copy=False)))
                    if out is None:
                        out = np.empty((len(file_of_row),) + reduced.shape[1:], dtype=reduced.dtype)
                    out[dest_sorted[lo:hi]] = reduced
                start = stop
    if out is None:
        return np.empty((0,) + tuple(shape), dtype=np.float32)
    return out


def gather(
    index: LatentIndex, rows: np.ndarray, reduce: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64)
    return read_rows(index.files, index.column, index.shape, index.file_of_row[rows], index.row_in_file[rows], reduce)


def resolve_generator(spec: str | None, index: LatentIndex) -> tuple[Path, str]:
    """(checkpoint path, sha256): --generator, else the one the latents' run recorded in its _run.json."""
    from facebatch.errors import FacebatchError
    from facebatch.nets import cache
    from facebatch.nets.checkpoints import resolve

    if spec is None:
        # the run's recorded file first, then what `sample` records: a registry name or file stem
        candidates = [
            RunDir.of_part(index.files[0]).generator_path(),
            index.metadata.get("generator"),
        ]  # `sample` records a registry name or file stem
        for candidate in filter(None, candidates):
            try:
                path, _ = resolve(candidate)
            except FacebatchError:
                continue
            return _worker_location(candidate, path), cache.sha256_of(path)
        raise InputError("the latents do not say where their generator file is; pass --generator")
    path, _ = resolve(spec)
    return _worker_location(spec, path), cache.sha256_of(path)


def _worker_location(spec, path):
    """An object-store URL as given (each worker host fetches its own copy), else the resolved local file."""
    if storage.is_url(spec) and not str(spec).startswith(("http://", "https://")):
        return storage.location(spec)
    return Path(path).resolve()


def check_generator(sha: str, index: LatentIndex, boundaries: Sequence, force: bool) -> None:
    """Latents, boundaries and generator must come from one generator: an edit is meaningless otherwise."""
    if force:
        return
    if index.generator_sha256 and index.generator_sha256 != sha:
        raise InputError(
            f"the latents were made with generator {index.generator_sha256[:12]}, --generator is "
            f"{sha[:12]}; pass --force to edit anyway"
        )
    for b in boundaries:
        if b.generator_sha256 and b.generator_sha256 != sha:
            raise InputError(
                f"boundary {b.name!r} was fitted for generator {b.generator_sha256[:12]}, --generator is "
                f"{sha[:12]}; pass --force to use it anyway"
            )
