"""The latent Parquet convention: shaped round trip, null error rows, and every reader DESIGN names."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from facebatch.pipeline.table import (
    atomic_write_table,
    latent_array_masked,
    latent_field,
    read_latent_table,
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
    atomic_write_table(tmp_path / "latents" / "part-00000.parquet", table)
    return lat, valid


def test_round_trip_is_bit_exact_and_error_rows_are_nan(tmp_path):
    lat, valid = _write(tmp_path)
    back = read_latent_table(tmp_path / "latents")
    w = back.latent("w")
    assert w.shape == lat.shape
    np.testing.assert_array_equal(w[valid], lat[valid])
    assert np.isnan(w[~valid]).all()
    assert back.metadata == {"generator_sha256": "abc", "seed": 3}
    assert list(back.frame.image_id) == [f"img{i}.png" for i in range(len(lat))]


def test_pandas_dask_and_pyarrow_read_the_folder(tmp_path):
    import dask.dataframe as dd

    lat, valid = _write(tmp_path)
    folder = tmp_path / "latents"
    (folder / "_stats").mkdir()
    (folder / "_stats" / "00000.json").write_text("{}")  # side files must not confuse readers
    pdf = pd.read_parquet(folder)
    ddf = dd.read_parquet(folder).compute()
    ads = pads.dataset(folder, format="parquet", exclude_invalid_files=False).to_table()
    for frame in (pdf, ddf):
        assert len(frame) == len(lat)
        np.testing.assert_array_equal(np.asarray(frame.w.iloc[0]).reshape(10, 16), lat[0])
    assert ads.num_rows == len(lat)
    assert run_metadata(ads.schema)["seed"] == 3


def test_no_temp_file_left_behind(tmp_path):
    _write(tmp_path)
    names = [p.name for p in (tmp_path / "latents").iterdir()]
    assert names == ["part-00000.parquet"]
