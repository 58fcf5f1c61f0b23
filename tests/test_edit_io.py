"""The boundaries file round-trips bit for bit, is plain JSON, and refuses files that are not one."""

import json

import numpy as np
import pytest

from facebatch.edit.boundaries_io import load_boundaries, pick, save_boundaries
from facebatch.edit.boundary import Boundary
from facebatch.errors import InputError


def some_boundaries():
    rng = np.random.default_rng(0)
    n = rng.standard_normal(512)
    rows = rng.standard_normal((3, 512))
    return [
        Boundary(
            "age",
            "w",
            list(range(14)),
            14,
            n / np.linalg.norm(n),
            -0.123456789012345,
            generator_sha256="ab" * 32,
            info={"metrics": {"val_accuracy": 0.9}, "counts": {"train_positive": 3}},
        ),
        Boundary("smile", "wplus", [0, 1, 2], 14, rows / np.linalg.norm(rows), 1e-300, info={"x": [1, None]}),
        Boundary("pose", "layer", [4, 5, 9], 14, rows / np.linalg.norm(rows, axis=1, keepdims=True), [0.1, -2.0, 3e10]),
        Boundary("sefa_00", "w", [2, 3], 14, rows[0] / np.linalg.norm(rows[0]), 0.0, method="sefa"),
    ]


def test_round_trip_is_bit_exact(tmp_path):
    path = tmp_path / "b.json"
    original = some_boundaries()
    save_boundaries(path, original, run={"command": "test"})
    back = load_boundaries(path)
    assert list(back) == [b.name for b in original]
    for b in original:
        got = back[b.name]
        assert (got.space, got.layers, got.num_ws, got.method, got.generator_sha256, got.info) == (
            b.space,
            b.layers,
            b.num_ws,
            b.method,
            b.generator_sha256,
            b.info,
        )
        np.testing.assert_array_equal(got.normal, b.normal)
        np.testing.assert_array_equal(got.intercept, b.intercept)
    doc = json.loads(path.read_text())  # plain JSON, readable without facebatch
    assert doc["format"] == "facebatch-boundaries" and doc["run"] == {"command": "test"}
    assert len(doc["boundaries"]["age"]["normal"]) == 512


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json at all", "not JSON"),
        ('{"hello": 1}', "not a facebatch boundaries file"),
        ('{"format": "facebatch-boundaries", "version": 99, "boundaries": {}}', "version 99"),
        ('{"format": "facebatch-boundaries", "version": 1, "boundaries": {"a": {"space": "w"}}}', "malformed"),
        (
            '{"format": "facebatch-boundaries", "version": 1, "boundaries": {"a": {"space": "w", "layers": [0], '
            '"num_ws": 1, "normal": [1, 0], "intercept": [0, 1]}}}',
            "do not fit",
        ),
    ],
)
def test_bad_files_are_refused(tmp_path, content, message):
    path = tmp_path / "b.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        load_boundaries(path)


def test_unknown_names_list_what_the_file_has(tmp_path):
    save_boundaries(tmp_path / "b.json", some_boundaries())
    with pytest.raises(
        InputError, match="unknown attribute 'beard': the boundaries file has age, pose, sefa_00, smile"
    ):
        pick(load_boundaries(tmp_path / "b.json"), ["age", "beard"])
    with pytest.raises(InputError, match="no boundaries file"):
        load_boundaries(tmp_path / "missing.json")


def test_celeba_names_find_the_shipped_boundaries_turned_the_right_way():
    from facebatch.nets import registry

    shipped = load_boundaries(registry.get("celeba64").boundaries_path())
    ws = np.random.default_rng(0).normal(size=(5, shipped["age"].num_ws, shipped["age"].normal.shape[-1]))
    smiling, young, smile = pick(shipped, ["Smiling", "Young", "smile"])
    assert (smiling.name, young.name) == ("Smiling", "Young")
    np.testing.assert_allclose(smiling.distance(ws), smile.distance(ws))
    np.testing.assert_allclose(young.distance(ws), -shipped["age"].distance(ws))  # + age is older, + Young younger
    with pytest.raises(InputError, match="unknown attribute 'Wavy_Hair'"):
        pick(shipped, ["Wavy_Hair"])  # a CelebA name with no shipped boundary is still unknown


def test_a_boundaries_file_is_read_within_a_bound_and_only_if_regular(tmp_path, monkeypatch):
    import os

    from facebatch.edit import boundaries_io
    from facebatch.errors import InputError

    fifo = tmp_path / "b.json"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="FIFO"):  # reading it would wait for a writer forever
        boundaries_io.load_boundaries(fifo)
    big = tmp_path / "big.json"
    big.write_text('{"format": "x"}' + " " * 2048)
    monkeypatch.setattr(boundaries_io, "MAX_BOUNDARIES_FILE_BYTES", 1024)
    with pytest.raises(InputError, match="larger than 1 KiB"):
        boundaries_io.load_boundaries(big)


def test_an_update_waits_for_another_writer_and_says_so_when_it_cannot(tmp_path, monkeypatch):
    from filelock import FileLock

    from facebatch.edit import boundaries_io

    path = tmp_path / "b.json"
    monkeypatch.setattr(boundaries_io, "LOCK_WAIT_S", 0.2)
    with FileLock(str(tmp_path / ".b.json.lock")):  # another run is merging into the same file
        with pytest.raises(InputError, match="being written by another facebatch run"):
            boundaries_io.write_boundaries(path, [], {}, overwrite=False, update=True)
    assert not path.exists()
