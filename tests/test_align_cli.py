"""`facebatch align` and `facebatch project --align` end to end on real photos; backend errors as one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import require
from PIL import Image
from typer.testing import CliRunner

from facebatch.alignment import fan_backend
from facebatch.alignment.api import check_backend
from facebatch.cli.app import app
from facebatch.errors import InputError, ModelNotAvailable
from facebatch.pipeline.rundir import FACES, RunDir

runner = CliRunner()
CELEBA_HQ = ("ref_female_015248.jpg", "ref_male_012712.jpg")


def photos(data_dir: Path, dest: Path) -> Path:
    """Two CelebA-HQ faces, the astronaut (nested), a cat and a broken file: links, nothing copied."""
    dest.mkdir(parents=True)
    for name in CELEBA_HQ:
        os.symlink(require(data_dir / "faces_aligned" / name), dest / name)
    (dest / "sub").mkdir()
    os.symlink(require(data_dir / "faces_unaligned" / "astronaut.png"), dest / "sub" / "astronaut.png")
    os.symlink(require(data_dir / "nonfaces" / "chelsea.png"), dest / "sub" / "chelsea.png")
    (dest / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return dest


def align(*args: str):
    return runner.invoke(app, ["align", *map(str, args)])


def test_unknown_and_unavailable_backends_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="unknown landmark backend 'nope'"):
        check_backend("nope")
    # face-alignment with its weights absent and downloads off: one line naming the files and the folder
    monkeypatch.setenv("FACEBATCH_OFFLINE", "1")
    monkeypatch.setattr(fan_backend, "checkpoint_dir", lambda: tmp_path / "hub" / "checkpoints")
    with pytest.raises(ModelNotAvailable) as exc:
        fan_backend.ensure_models()
    message = str(exc.value)
    assert "\n" not in message and "2DFAN4-11f355bf06.pth.tar" in message and str(tmp_path / "hub") in message
    assert "--backend dlib" in message
    (tmp_path / "in").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "in" / "a.png")
    res = align(tmp_path / "in", tmp_path / "out", "--backend", "face-alignment", "--workers", "0")
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "face-alignment" in res.output, res.output
    res = align(tmp_path / "in", tmp_path / "out", "--backend", "nope", "--workers", "0")
    assert res.exit_code == 2 and "unknown landmark backend" in res.output


def test_align_writes_pngs_and_a_row_per_image_and_resumes(tmp_path, data_dir):
    pytest.importorskip("dlib", reason="the dlib backend needs dlib-bin (the align extra)")
    from facebatch.alignment import api
    from facebatch.pipeline.latents import read_latent_table

    inp, out = photos(data_dir, tmp_path / "in"), tmp_path / "out"
    run_dir = RunDir(out, FACES)
    res = align(inp, out, "--size", 64, "--workers", 0, "--shard-size", 2)
    assert res.exit_code == 0, res.output

    table = read_latent_table(run_dir.table_dir)
    frame = table.frame.set_index("image_id")
    ids = sorted(["broken.jpg", *CELEBA_HQ, "sub/astronaut.png", "sub/chelsea.png"])
    assert frame.index.tolist() == ids
    assert (
        frame.loc["sub/chelsea.png", "status"] == "error" and "no face found" in frame.loc["sub/chelsea.png", "error"]
    )
    assert frame.loc["broken.jpg", "status"] == "error" and frame.loc["broken.jpg", "error"]
    ok = frame[frame["status"] == "ok"]
    assert ok.index.tolist() == sorted([*CELEBA_HQ, "sub/astronaut.png"]) and ok["error"].isna().all()
    assert (ok["face_index"] == 0).all() and (ok["score"] > 0.3).all()
    assert set(ok["orig_width"]) == {1024, 512}
    rows = [ids.index(i) for i in ok.index]
    quads, landmarks, boxes = (table.latent(n)[rows] for n in ("quad", "landmarks", "box"))
    assert quads.shape == (3, 4, 2) and landmarks.shape == (3, 68, 2) and boxes.shape == (3, 4)
    assert np.isnan(table.latent("quad")[ids.index("sub/chelsea.png")]).all()

    for image_id, quad, aligned_path in zip(ok.index, quads, ok["aligned_path"]):
        expect = api.detect_and_align(Image.open(inp / image_id).convert("RGB"), 64)[0]
        np.testing.assert_allclose(quad, expect.quad, atol=1e-9)  # the quad is the photo's own pixels
        with Image.open(out / aligned_path) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
            assert np.array_equal(np.asarray(im), np.asarray(expect.image))
    # CelebA-HQ is already aligned: its crop quad is (nearly) the whole 1024 x 1024 photo
    celeba_quad = quads[ok.index.tolist().index(CELEBA_HQ[0])]
    assert np.abs(celeba_quad - [[0, 0], [0, 1023], [1023, 1023], [1023, 0]]).max() < 60

    run = json.loads(run_dir.run_file.read_text())
    assert run["status"] == "complete" and run["config"]["size"] == 64 and run["config"]["backend"] == "dlib"
    assert run_dir.success_file.exists()

    before = sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.table_dir.glob("*.parquet"))
    again = align(inp, out, "--size", 64, "--workers", 0, "--shard-size", 2)
    assert again.exit_code == 0, again.output
    assert json.loads(run_dir.run_file.read_text())["summary"]["images_processed"] == 0
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.table_dir.glob("*.parquet")) == before
    other = align(inp, out, "--size", 128, "--workers", 0, "--shard-size", 2)
    assert other.exit_code == 2 and "size: 64 -> 128" in other.output and "--overwrite" in other.output
    dry = align(inp, out, "--size", 64, "--workers", 0, "--shard-size", 2, "--dry-run")
    assert dry.exit_code == 0 and "3 shards done" in dry.output and "FFHQ recipe, 64 px" in dry.output


def test_unknown_faces_mode_is_one_line_and_exit_2(tmp_path, data_dir):
    res = align(photos(data_dir, tmp_path / "in"), tmp_path / "out", "--faces", "every", "--workers", "0")
    assert res.exit_code == 2 and "--faces must be one of largest, all" in res.output and res.output.count("\n") == 1


def test_project_align_records_the_crop_quad_with_the_latent(
    tmp_path, data_dir, fixture_generator_path, restore_torch_threads
):
    pytest.importorskip("dlib", reason="the dlib backend needs dlib-bin (the align extra)")
    from facebatch.alignment import api
    from facebatch.pipeline.latents import read_latent_table

    inp = tmp_path / "in"
    inp.mkdir()
    for name in CELEBA_HQ[:1]:
        os.symlink(require(data_dir / "faces_aligned" / name), inp / name)
    os.symlink(require(data_dir / "faces_unaligned" / "astronaut.png"), inp / "astronaut.png")
    os.symlink(require(data_dir / "nonfaces" / "chelsea.png"), inp / "chelsea.png")
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "project",
            str(inp),
            "-g",
            str(fixture_generator_path),
            "-o",
            str(out),
            "--align",
            "--steps",
            "1",
            "--set",
            "w_avg_samples=64",
            "--set",
            "perceptual=none",
            "--workers",
            "0",
            "--threads-per-worker",
            "1",
            "--save-reconstructions",
        ],
    )
    assert res.exit_code == 0, res.output

    run_dir = RunDir(out)
    table = read_latent_table(run_dir.table_dir)
    frame = table.frame
    ids = frame["image_id"].tolist()
    assert ids == sorted([CELEBA_HQ[0], "astronaut.png", "chelsea.png"])
    cat = frame.set_index("image_id").loc["chelsea.png"]
    assert cat["status"] == "error" and "no face found" in cat["error"]
    quads, w = table.latent("quad"), table.latent("w")
    assert quads.shape == (3, 4, 2) and np.isnan(quads[ids.index("chelsea.png")]).all()
    assert np.isnan(w[ids.index("chelsea.png")]).all()
    for image_id in (CELEBA_HQ[0], "astronaut.png"):
        row = ids.index(image_id)
        assert frame["status"][row] == "ok" and np.isfinite(w[row]).all()
        _, expect = api.align_for_projection(Image.open(inp / image_id).convert("RGB"), 64)
        np.testing.assert_allclose(quads[row], expect, atol=1e-3)  # float32 in the table
    run = json.loads(run_dir.run_file.read_text())
    assert run["config"]["align"] == "dlib"


@pytest.mark.slow
def test_align_on_a_local_dask_cluster_matches_in_process(tmp_path, data_dir):
    """Two worker processes (the landmark model loaded once in each) give the same table as --workers 0."""
    pytest.importorskip("dlib", reason="the dlib backend needs dlib-bin (the align extra)")
    inp = photos(data_dir, tmp_path / "in")
    local = align(inp, tmp_path / "local", "--size", 64, "--workers", 0, "--shard-size", 2)
    dask = align(inp, tmp_path / "dask", "--size", 64, "--workers", 2, "--shard-size", 2)
    assert local.exit_code == 0 and dask.exit_code == 0, dask.output
    a, b = (pd.read_parquet(RunDir(tmp_path / d, FACES).table_dir).drop(columns=["seconds"]) for d in ("local", "dask"))
    pd.testing.assert_frame_equal(a, b)
    for path in a["aligned_path"].dropna():
        assert (tmp_path / "local" / path).read_bytes() == (tmp_path / "dask" / path).read_bytes()


def two_faces(data_dir: Path, dest: Path) -> Path:
    """One photo with two faces: the astronaut (512 px) beside a CelebA-HQ face shrunk to 256 px."""
    astronaut = Image.open(require(data_dir / "faces_unaligned" / "astronaut.png")).convert("RGB")
    small = Image.open(require(data_dir / "faces_aligned" / CELEBA_HQ[0])).convert("RGB").resize((256, 256))
    canvas = Image.new("RGB", (800, 512), (128, 128, 128))
    canvas.paste(astronaut, (0, 0))
    canvas.paste(small, (530, 120))
    dest.mkdir(parents=True)
    canvas.save(dest / "pair.png")
    Image.new("RGB", (64, 64), (20, 20, 20)).save(dest / "blank.png")
    return dest


def test_faces_all_writes_one_row_and_png_per_face(tmp_path, data_dir):
    pytest.importorskip("dlib", reason="the dlib backend needs dlib-bin (the align extra)")
    inp, out = two_faces(data_dir, tmp_path / "in"), tmp_path / "out"
    res = align(inp, out, "--size", 64, "--faces", "all", "--workers", 0, "--shard-size", 1)
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(RunDir(out, FACES).table_dir)
    assert frame["image_id"].tolist() == ["blank.png", "pair.png", "pair.png"]
    assert frame["status"].tolist() == ["error", "ok", "ok"]
    pair = frame[frame["image_id"] == "pair.png"]
    assert pair["face_index"].tolist() == [0, 1]
    assert pair["aligned_path"].tolist() == ["aligned/pair.png.png", "aligned/pair.png.face1.png"]
    boxes = np.stack(pair["box"].map(np.asarray))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert area[0] > area[1]  # largest first: the CelebA-HQ face (~130 px box), then the astronaut's (~90 px)
    assert boxes[0, 0] > 400 > boxes[1, 0]
    for path in pair["aligned_path"]:
        assert Image.open(out / path).size == (64, 64)
    again = align(inp, out, "--size", 64, "--faces", "all", "--workers", 0, "--shard-size", 1, "--retry-errors")
    assert again.exit_code == 0, again.output
    assert pd.read_parquet(RunDir(out, FACES).table_dir)["image_id"].tolist() == ["blank.png", "pair.png", "pair.png"]
