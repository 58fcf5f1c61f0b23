"""`facebatch invert`: side-by-side PNGs, scores.json and a table; bad files are rows, bad options one line + exit 2."""

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.pipeline.images import load_image
from facebatch.stages.common import per_image_seed

runner = CliRunner()


def test_invert_writes_target_and_reconstruction_side_by_side(tmp_path, fixture_generator_path, data_dir):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    coffee = data_dir / "nonfaces" / "coffee.png"
    face = data_dir / "faces_aligned" / "ref_female_015248.jpg"
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "invert",
            str(face),
            str(coffee),
            str(broken),
            "-g",
            str(fixture_generator_path),
            "--preset",
            "fast",
            "--steps",
            "2",
            "--set",
            "perceptual=none",
            "--set",
            "w_avg_samples=1000",
            "--out",
            str(out),
            "--device",
            "cpu",
            "-q",
        ],
    )
    assert res.exit_code == 1, res.output  # one unreadable file: the others are done, the run reports failure
    assert "PSNR" in res.output and "broken.jpg: not an image file" in res.output and "could not be read" in res.output

    png = np.asarray(Image.open(out / "coffee.png.png"), dtype=np.float32)
    assert png.shape == (64, 128, 3)
    target = (load_image(coffee, 64)[0].permute(1, 2, 0).numpy() + 1) * 127.5
    assert np.abs(png[:, :64] - target).max() <= 1.0  # left: the target as projected
    assert np.abs(png[:, 64:] - target).mean() > 1.0  # right: the reconstruction, not a copy

    report = json.loads((out / "scores.json").read_text())
    rows = {r["image_id"]: r for r in report["images"]}
    assert [r["status"] for r in report["images"]] == ["ok", "ok", "error"]
    assert rows["coffee.png"]["seed"] == per_image_seed(0, "coffee.png")
    assert np.isfinite(rows["coffee.png"]["psnr"]) and np.isfinite(rows["coffee.png"]["d_residual"])
    assert rows["coffee.png"]["perceptual"] is None  # backend none: null, not NaN (strict JSON)
    assert report["config"]["steps"] == 2 and report["config"]["perceptual"] == "none"
    assert len(report["generator_sha256"]) == 64


def test_invert_missing_image_is_one_line_exit_2(tmp_path, fixture_generator_path):
    res = runner.invoke(
        app, ["invert", str(tmp_path / "nope.png"), "-g", str(fixture_generator_path), "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "no such image file" in res.output and "Traceback" not in res.output


def test_invert_nvlabs_offline_names_the_missing_vgg_file(tmp_path, monkeypatch, fixture_generator_path, data_dir):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    res = runner.invoke(
        app,
        [
            "invert",
            str(data_dir / "nonfaces" / "coffee.png"),
            "-g",
            str(fixture_generator_path),
            "--preset",
            "nvlabs",
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 2 and "vgg16-397923af.pth" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()
