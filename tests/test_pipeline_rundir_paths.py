"""Every output path comes from a sanitised, unique id and stays under --out.

Roots: `rundir.safe_relpath` (no root, no '..', no empty parts), `rundir.output_names` (unique names over a
run's ids, case-insensitively), `rundir.unique_ids` (ids for files named on the command line); `invert`,
`augment` and `project --save-reconstructions` derive their file names from them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facebatch.pipeline.rundir import RunDir, output_names, safe_relpath, unique_ids
from facebatch.stages.augment import output_path

HOSTILE = ["/etc/passwd", "../../x.png", "a/../../b.png", "..", ".", "", "a//b.png", "c:\\\\win\\\\x.png", "\x00x.png"]


@pytest.mark.parametrize("image_id", HOSTILE)
def test_safe_relpath_never_leaves_the_folder(tmp_path, image_id):
    rel = safe_relpath(image_id)
    assert not rel.startswith("/") and ".." not in rel.split("/") and rel
    full = os.path.normpath(tmp_path / rel)
    assert full.startswith(str(tmp_path) + os.sep)


def test_output_names_are_unique_for_clashing_stems_and_cases():
    ids = ["x.jpg", "x.png", "X.PNG", "x", "x.jpg.png", "a/y.png", "b/y.png", "../y.png", "__/y.png"]
    names = output_names(ids)
    assert len({n.lower() for n in names.values()}) == len(ids)
    assert all(n.endswith(".png") and ".." not in n.split("/") for n in names.values())
    assert output_names(["a/y.jpg", "b/z.jpg"]) == {"a/y.jpg": "a/y.png", "b/z.jpg": "b/z.png"}  # stems kept


def test_augment_paths_of_x_jpg_and_x_png_differ():
    names = output_names(["x.jpg", "x.png"])
    a = output_path("x.jpg", "smile", 1.0, names["x.jpg"])
    b = output_path("x.png", "smile", 1.0, names["x.png"])
    assert a != b and a.startswith("images/smile/+1/")
    assert ".." not in output_path("../../etc/x.png", "smile", 1.0).split("/")


def test_unique_ids_for_files_from_different_folders(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "old").mkdir()
    paths = [tmp_path / "photos" / "a.png", tmp_path / "old" / "a.png", Path("/abs/b.png"), tmp_path / "old/../c.png"]
    ids = unique_ids(paths)
    assert ids[:3] == ["photos/a.png", "old/a.png", "b.png"] and ids[3] == "c.png"
    assert all(not i.startswith("/") and ".." not in i.split("/") for i in ids)


def test_reconstruction_path_stays_under_out(tmp_path):
    run = RunDir(tmp_path)
    for image_id in HOSTILE:
        assert os.path.normpath(run.reconstruction(image_id)).startswith(str(tmp_path) + os.sep)


def test_invert_with_inputs_from_two_folders_writes_only_under_out(tmp_path, fixture_generator_path):
    from PIL import Image
    from typer.testing import CliRunner

    from facebatch.cli.app import app

    for folder in ("left", "right"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (16, 16), (10, 200, 30)).save(tmp_path / folder / "face.png")
    out = tmp_path / "out"
    before = {p for p in tmp_path.rglob("*")}
    args = ["invert", str(tmp_path / "left" / "face.png"), str(tmp_path / "right" / ".." / "right" / "face.png")]
    res = CliRunner().invoke(app, [*args, "-g", str(fixture_generator_path), "-o", str(out), "--steps", "1"])
    assert res.exit_code == 0, res.output
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(str(p).startswith(str(out)) for p in new), sorted(map(str, new))
    assert (out / "left" / "face.png.png").is_file() and (out / "right" / "face.png.png").is_file()
