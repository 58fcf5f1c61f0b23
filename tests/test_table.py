"""The latent Parquet convention: shaped round trip, null error rows, and every reader the tables promise."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from facebatch.pipeline.latents import read_latent_table
from facebatch.pipeline.rundir import RunDir
from facebatch.pipeline.table import (
    atomic_write_table,
    latent_array_masked,
    latent_field,
    run_metadata,
    with_run_metadata,
)


def _write(tmp_path, n=6, shape=(10, 16)):
    rng = np.random.default_rng(0)
    lat = rng.standard_normal((n,) + shape).astype(np.float32)
    valid = np.array([True] * (n - 1) + [False])
    schema = pa.schema([pa.field("image_id", pa.string()), latent_field("w", shape)])
    schema = with_run_metadata(schema, {"generator_sha256": "abc", "seed": 3})
    table = pa.Table.from_arrays(
        [pa.array([f"img{i}.png" for i in range(n)]), latent_array_masked(lat, valid, shape)], schema=schema
    )
    atomic_write_table(RunDir(tmp_path).part("part-00000"), table)
    return lat, valid


def test_round_trip_is_bit_exact_and_error_rows_are_nan(tmp_path):
    lat, valid = _write(tmp_path)
    back = read_latent_table(RunDir(tmp_path).table_dir)
    w = back.latent("w")
    assert w.shape == lat.shape
    np.testing.assert_array_equal(w[valid], lat[valid])
    assert np.isnan(w[~valid]).all()
    assert back.metadata == {"generator_sha256": "abc", "seed": 3}
    assert list(back.frame.image_id) == [f"img{i}.png" for i in range(len(lat))]


def test_pandas_dask_and_pyarrow_read_the_folder(tmp_path):
    import dask.dataframe as dd

    lat, valid = _write(tmp_path)
    folder = RunDir(tmp_path).table_dir
    (folder / "_stats").mkdir()
    (folder / "_stats" / "00000.json").write_text("{}")  # side files must not confuse readers
    pdf = pd.read_parquet(folder)
    ddf = dd.read_parquet(folder).compute()
    ads = pads.dataset(folder, format="parquet", exclude_invalid_files=False).to_table()
    for frame in (pdf, ddf):
        assert len(frame) == len(lat)
        np.testing.assert_array_equal(np.stack(frame.w.iloc[0]), lat[0])  # rows of w_dim values, num_ws of them
    assert ads.num_rows == len(lat)
    assert run_metadata(ads.schema)["seed"] == 3


def test_no_temp_file_left_behind(tmp_path):
    _write(tmp_path)
    names = [p.name for p in RunDir(tmp_path).table_dir.iterdir()]
    assert names == ["part-00000.parquet"]


def test_every_writer_publishes_a_whole_fsynced_temp_file_by_rename(tmp_path, monkeypatch):
    """A non-atomic writer (straight to the target, or a rename before fsync) fails here: at the moment
    the target name appears it must be a complete file that was fsynced under a hidden temp name."""
    import json
    import os

    import pyarrow.parquet as pq

    from facebatch.pipeline import atomic
    from facebatch.pipeline.noise_store import NoiseWriter

    synced, published = set(), []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def replace(src, dst):
        src, dst = Path(src), Path(dst)
        assert str(src) in synced, f"{src} renamed before fsync"
        assert src.parent == dst.parent and src.name.startswith(".") and atomic.TEMP_MARK in src.name
        assert not dst.exists() or dst.read_bytes() != src.read_bytes()  # the reader still sees the old file
        published.append((dst, src.read_bytes()))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    lat, _ = _write(tmp_path)  # atomic_write_table
    atomic.atomic_write_json(tmp_path / "run.json", {"a": 1})
    atomic.atomic_write_bytes(tmp_path / "x.bin", b"payload")
    noise = NoiseWriter(tmp_path / "noise" / "part-00000.npz")
    noise.add("img0.png", [np.zeros((1, 4, 4), np.float32)])
    noise.publish()

    names = [dst.name for dst, _ in published]
    assert names == ["part-00000.parquet", "run.json", "x.bin", "part-00000.npz"]
    part = dict((d.name, b) for d, b in published)["part-00000.parquet"]
    assert pq.read_table(pa.BufferReader(part)).num_rows == len(lat)  # whole when it appeared
    assert json.loads((tmp_path / "run.json").read_text()) == {"a": 1}
    assert not list(tmp_path.rglob(f"*{atomic.TEMP_MARK}*"))


def test_stale_temps_are_swept_and_nothing_else(tmp_path):
    from facebatch.pipeline import atomic

    keep = tmp_path / "part-00000.parquet"
    keep.write_bytes(b"x")
    stale = atomic.temp_path(tmp_path / "part-00001.parquet")
    stale.write_bytes(b"half")
    nested = atomic.temp_path(tmp_path / "sub" / "a.png")
    nested.parent.mkdir()
    nested.write_bytes(b"half")
    assert atomic.sweep_temps([tmp_path], [tmp_path / "sub"]) == 2
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["part-00000.parquet"]


def test_published_files_get_a_plain_files_mode_whatever_the_writer_made(tmp_path):
    """safetensors replaces the temp with its own 0600 file: a NADA generator came out unreadable to the group."""
    import os
    import stat

    from safetensors.torch import save_file

    from facebatch.pipeline import atomic

    with atomic.atomic_output(tmp_path / "g.safetensors") as tmp:
        save_file({"x": __import__("torch").zeros(2)}, str(tmp))
    atomic.atomic_write_bytes(tmp_path / "b.bin", b"x")
    for name in ("g.safetensors", "b.bin"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == atomic.FILE_MODE
    assert atomic.FILE_MODE == 0o666 & ~_current_umask()


def _current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_readers_that_never_heard_of_facebatch_see_the_latent_shape(tmp_path):
    """Polars and DuckDB get (num_ws, w_dim) from the Parquet type itself, not from our field metadata."""
    import duckdb
    import polars as pl

    lat, valid = _write(tmp_path, shape=(10, 16))
    part = RunDir(tmp_path).part("part-00000")
    frame = pl.read_parquet(part)
    assert frame.schema["w"] == pl.Array(pl.Float32, shape=(10, 16))
    w = frame["w"].to_numpy()
    assert w.shape == (len(lat), 10, 16)
    np.testing.assert_array_equal(w[valid], lat[valid])
    con = duckdb.connect()
    assert con.sql(f"SELECT w FROM '{part}'").types == ["FLOAT[][]"]
    first = con.sql(f"SELECT w FROM '{part}' WHERE image_id = 'img0.png'").fetchall()[0][0]
    np.testing.assert_array_equal(np.asarray(first, dtype=np.float32), lat[0])
    assert pa.types.is_fixed_size_list(pq.read_schema(part).field("w").type.value_type)


def test_parts_written_with_flat_latents_still_read_alone_and_beside_nested_ones(tmp_path):
    """tests/data/flat_latents holds a part as facebatch wrote them before the nesting: w flat [num_ws * w_dim]."""
    import shutil

    from facebatch.pipeline.latents import gather, read_index

    old = Path(__file__).parent / "data" / "flat_latents"
    expected = np.random.default_rng(0).standard_normal((3, 4, 8)).astype(np.float32)
    back = read_latent_table(old)
    assert back.latent("w").shape == (3, 4, 8)
    np.testing.assert_array_equal(back.latent("w")[[0, 2]], expected[[0, 2]])
    assert np.isnan(back.latent("w")[1]).all() and back.metadata["generator_sha256"] == "old"

    run = tmp_path / "mixed"
    shutil.copytree(old, run)
    new = np.random.default_rng(1).standard_normal((2, 4, 8)).astype(np.float32)
    schema = pq.read_schema(RunDir(old).part("part-00000"))
    schema = schema.set(2, latent_field("w", (4, 8)))
    table = pa.Table.from_arrays(
        [
            pa.array(["d.png", "e.png"]),
            pa.array(["ok", "ok"]),
            latent_array_masked(new, np.array([True, True]), (4, 8)),
        ],
        schema=schema,
    )
    atomic_write_table(RunDir(run).part("part-00001"), table)
    both = read_latent_table(run)
    assert list(both.frame.image_id) == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    np.testing.assert_array_equal(both.latent("w")[3:], new)
    index = read_index(run)
    np.testing.assert_array_equal(gather(index, np.array([4, 0, 3])), np.stack([new[1], expected[0], new[0]]))


def test_nested_columns_read_back_through_slices_and_chunks():
    """Arrow arrays with an offset (a slice of a record batch) must give their own rows, not the first ones."""
    from facebatch.pipeline.table import flat_rows, latent_array

    lat = np.arange(5 * 3 * 2, dtype=np.float32).reshape(5, 3, 2)
    arr = latent_array(lat, 5, (3, 2))
    np.testing.assert_array_equal(flat_rows(arr.slice(2, 2)), lat[2:4].reshape(2, 6))
    chunked = pa.chunked_array([arr.slice(0, 1), arr.slice(3, 2)])
    np.testing.assert_array_equal(flat_rows(chunked), lat[[0, 3, 4]].reshape(3, 6))
