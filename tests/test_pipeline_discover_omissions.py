"""Nothing is left out silently, and no file is read whole before it is known to be an image.

Roots: `discover_images` reports every folder it cannot list and every broken link as a FacebatchWarning
(the CLI prints one 'warning:' line each command) and keeps special files as items; `images.read_bytes`
checks type, size and the format signature before reading the body, so oversized or non-image files become
error rows at the cost of a few bytes.
"""

from __future__ import annotations

import os
import time
import tracemalloc
import warnings

import pytest
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.errors import FacebatchWarning
from facebatch.pipeline import images
from facebatch.pipeline.discover import discover_images
from facebatch.pipeline.images import UnreadableImage, read_bytes

runner = CliRunner()


def _tree(tmp_path):
    from PIL import Image

    root = tmp_path / "in"
    (root / "ok").mkdir(parents=True)
    (root / "locked").mkdir()
    Image.new("RGB", (8, 8)).save(root / "ok" / "a.png")
    Image.new("RGB", (8, 8)).save(root / "locked" / "b.png")
    return root


def _deny(monkeypatch, denied):
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).rstrip("/").endswith(denied):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_an_unreadable_subfolder_is_reported(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    _deny(monkeypatch, "locked")
    with pytest.warns(FacebatchWarning, match=r"skipped 1 unreadable path.*locked: Permission denied"):
        items = discover_images(root)
    assert [i["image_id"] for i in items] == ["ok/a.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_a_chmod_000_subfolder_is_reported(tmp_path):
    root = _tree(tmp_path)
    (root / "locked").chmod(0)
    try:
        with pytest.warns(FacebatchWarning, match="locked"):
            discover_images(root)
    finally:
        (root / "locked").chmod(0o755)


def test_broken_links_are_reported_and_fifos_kept_as_items(tmp_path):
    root = _tree(tmp_path)
    os.symlink(tmp_path / "gone.png", root / "broken.png")
    os.mkfifo(root / "pipe.png")
    with pytest.warns(FacebatchWarning, match="broken.png: broken link"):
        ids = [i["image_id"] for i in discover_images(root)]
    assert "pipe.png" in ids and "broken.png" not in ids


def test_the_cli_prints_the_skipped_folder_as_one_warning_line(tmp_path, monkeypatch, fixture_generator_path):
    root = _tree(tmp_path)
    _deny(monkeypatch, "locked")
    res = runner.invoke(
        app, ["project", str(root), "-g", str(fixture_generator_path), "-o", str(tmp_path / "o"), "--dry-run"]
    )
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "locked" in lines[0]


def test_no_warning_when_everything_is_readable(tmp_path):
    root = _tree(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FacebatchWarning)
        assert len(discover_images(root)) == 2


def test_a_huge_file_named_png_is_refused_without_reading_it(tmp_path):
    big = tmp_path / "big.png"
    with open(big, "wb") as fh:
        fh.truncate(2 << 30)  # sparse: 2 GiB that cost no disk
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(UnreadableImage, match="exceeds the .* MiB limit"):
        read_bytes(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - started < 1 and peak < 1 << 20


def test_a_non_image_is_refused_after_its_first_bytes(tmp_path, monkeypatch):
    path = tmp_path / "notes.png"
    path.write_bytes(b"hello world, not an image" * 1000)
    with pytest.raises(UnreadableImage, match="not an image file") as info:
        read_bytes(path)
    assert len(info.value.image_info["file_sha256"]) == 64
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 20)
    png = tmp_path / "real.png"
    from PIL import Image

    Image.new("RGB", (64, 64)).save(png)
    with pytest.raises(UnreadableImage, match="exceeds"):
        read_bytes(png)


@pytest.mark.parametrize("special", ["fifo", "dir", "device"])
def test_special_files_are_described_not_blocked_on(tmp_path, special):
    path = tmp_path / "x.png"
    if special == "fifo":
        os.mkfifo(path)
        what = "a FIFO"
    elif special == "dir":
        path.mkdir()
        what = "a folder"
    else:
        path = "/dev/zero"
        what = "a character device"
    with pytest.raises(UnreadableImage, match=f"not a regular file \\({what}\\)"):
        read_bytes(path)
