"""Image discovery: recursive, case-insensitive, stable ids, hidden and OUT folders skipped, symlink loops end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facebatch.errors import InputError
from facebatch.pipeline.discover import discover_images


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_recursive_case_insensitive_sorted_relative_ids(tmp_path):
    for name in [
        "b/z.JPG",
        "a.png",
        "b/c/d.TiFf",
        "e.webp",
        "f.bmp",
        "g.jpeg",
        "h.tif",
        "notes.txt",
        "x.gif",
        ".hidden.png",
        ".cache/y.png",
    ]:
        touch(tmp_path / name)
    items = discover_images(tmp_path)
    assert [i["image_id"] for i in items] == ["a.png", "b/c/d.TiFf", "b/z.JPG", "e.webp", "f.bmp", "g.jpeg", "h.tif"]
    assert all(os.path.isabs(i["path"]) and os.path.exists(i["path"]) for i in items)


def test_symlink_loops_terminate_and_linked_files_are_found(tmp_path):
    root = tmp_path / "root"
    touch(root / "sub" / "a.png")
    os.symlink(root, root / "sub" / "loop")  # a link back to an ancestor
    os.symlink(root / "sub", root / "again")  # a second way into the same folder
    outside = touch(tmp_path / "elsewhere" / "b.jpg")
    os.symlink(outside, root / "linked.jpg")
    os.symlink(tmp_path / "missing.png", root / "broken.png")
    ids = [i["image_id"] for i in discover_images(root)]
    assert "linked.jpg" in ids and "broken.png" not in ids
    assert len([i for i in ids if i.endswith("a.png")]) == 1  # one real folder, visited once


def test_out_folder_inside_the_input_is_excluded(tmp_path):
    touch(tmp_path / "a.png")
    touch(tmp_path / "out" / "reconstructions" / "a.png.png")
    assert [i["image_id"] for i in discover_images(tmp_path, exclude=[tmp_path / "out"])] == ["a.png"]


def test_single_file_and_bad_paths(tmp_path):
    f = touch(tmp_path / "one.PNG")
    assert discover_images(f) == [{"image_id": "one.PNG", "path": str(f.resolve())}]
    with pytest.raises(InputError, match="no such folder"):
        discover_images(tmp_path / "nope")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match="fifo is a FIFO, not a folder or image file"):
        discover_images(tmp_path / "fifo")
    with pytest.raises(InputError, match="not an image file"):
        discover_images(touch(tmp_path / "a.txt"))


def test_a_path_that_is_not_the_folder_asked_for_is_said_as_what_it_is(tmp_path):
    from facebatch.pipeline.discover import not_a_folder

    os.mkfifo(tmp_path / "fifo")
    for path, said in (
        (tmp_path / "fifo", "is a FIFO, not a run folder"),
        (Path("/dev/null"), "is a character device, not a run folder"),
        (touch(tmp_path / "a.txt"), "is a file, not a run folder"),
        (tmp_path / "nope", "no such run folder"),
    ):
        message = str(not_a_folder(path, "run folder"))
        assert said in message and str(path) in message, message
