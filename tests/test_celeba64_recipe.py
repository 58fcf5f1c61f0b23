"""The celeba64 training recipe's machinery on the CPU: the GPU batch choice, the export a GPU machine
hands back, the travelling data pack, and the GPU day script's dry run (every step at toy size)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TINY = ["--res", "32", "--channel-base", "256", "--channel-max", "32", "--w-dim", "32", "--map-layers", "2"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"celeba64_{name}", REPO / "models" / "celeba64" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "models" / "celeba64"))  # pack_data imports train from beside it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module


@pytest.fixture(scope="module")
def train():
    return load("train")


def tiny_trainer(train, tmp_path, *extra):
    args = train.parse_args(["--data", "x", "--out", str(tmp_path), *TINY, *extra])
    return train.Trainer(args, torch.device("cpu"))


def test_gamma_and_ema_follow_the_recipe_not_the_batch(train, tmp_path):
    trainer = tiny_trainer(train, tmp_path, "--batch", "128")
    assert trainer.args.gamma == pytest.approx(0.0002 * 32**2 / 32)  # the value the model was trained with
    assert trainer.ema_kimg == pytest.approx(128 * 10 / 32)  # the official code's batch-scaled half-life
    with pytest.raises(SystemExit):
        train.parse_args(["--data", "x", "--out", "y", "--batch", "3"])


def test_choose_batch_takes_the_largest_that_still_pays_and_trains_nothing(train, tmp_path, monkeypatch):
    trainer = tiny_trainer(train, tmp_path, "--batch", "auto")
    data = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    rates = {64: 100.0, 128: 190.0, 256: 220.0}  # 128 pays (1.9x), 256 does not (1.16x < 1.25x)
    monkeypatch.setattr(
        train, "images_per_second", lambda tr, d, b: (tr.train_step(train.sample_reals(d, 2)), rates[b])[1]
    )
    chosen, measured = train.choose_batch(trainer, data)
    assert chosen == 128 and measured == rates
    assert all(torch.equal(before[k], v) for k, v in trainer.G.state_dict().items())
    assert trainer.nimg == 0 and trainer.step == 0


def test_export_parts_rejoin_to_the_exact_state(train, tmp_path, monkeypatch):
    trainer = tiny_trainer(train, tmp_path / "run")
    (tmp_path / "run").mkdir()
    trainer.train_step(train.sample_reals(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), 4))
    trainer.save(tmp_path / "run", torch.randn(4, 32))
    monkeypatch.setattr(train, "EXPORT_PART_BYTES", 100_000)  # several parts even for the tiny state
    train.export_snapshot(tmp_path / "run", tmp_path / "export")
    parts = sorted((tmp_path / "export").glob("state.pt.part*"))
    assert len(parts) > 2 and all(p.stat().st_size <= 100_000 for p in parts)
    joined = train.join_state_parts(tmp_path / "export", tmp_path / "state.pt")
    assert joined.read_bytes() == (tmp_path / "run" / "state.pt").read_bytes()
    parts[1].write_bytes(parts[1].read_bytes()[:-1])  # a part cut short is refused, not joined
    with pytest.raises(SystemExit, match="do not match"):
        train.join_state_parts(tmp_path / "export", tmp_path / "bad.pt")


def test_pack_holds_the_training_images_as_the_recipe_reads_them(tmp_path):
    from facebatch.pipeline.images import load_image

    pack_data, train = load("pack_data"), load("train")
    (tmp_path / "d" / "images").mkdir(parents=True)
    for i in range(3):  # smooth images (WebP is lossy on noise), not square, as CelebA crops are not
        yy, xx = np.mgrid[0:90, 0:70]
        img = np.stack([(xx * (i + 1) + yy) % 256, yy * 2 % 256, np.full_like(xx, 40 * i)], -1).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / "d" / "images" / f"{i:06d}.png")
    (tmp_path / "d" / "split.csv").write_text("image_id,identity,split\n000000.png,1,train\n000001.png,2,val\n"
                                               "000002.png,3,train\n")  # fmt: skip
    meta = pack_data.pack(tmp_path / "d", tmp_path / "p.parquet", res=32)
    assert meta["images"] == 2 and meta["split"] == "train"
    images = train.load_train_images(tmp_path / "p.parquet", 32, tmp_path / "unused.pt")
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 32, 32)
    for k, name in enumerate(["000000.png", "000002.png"]):
        ref = ((load_image(tmp_path / "d" / "images" / name, 32)[0] + 1) * 127.5).round()
        mse = (images[k].float() - ref).square().mean().item()
        assert 10 * np.log10(255**2 / max(mse, 1e-9)) > 30
    with pytest.raises(SystemExit, match="32-px"):
        train.load_train_images(tmp_path / "p.parquet", 64, tmp_path / "unused.pt")


def test_gpu_day_dry_run_runs_every_step(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_DAY_WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", str(REPO / "bench" / "gpu_day.sh"), "--dry-run", "--out", str(tmp_path / "out")],
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    log = (tmp_path / "out" / "log").read_text()
    assert res.returncode == 0, log[-3000:]
    for step in ("install", "tests", "bench"):
        assert f"== {step}: exit 0" in log, log[-3000:]
    assert "== train: exit 0" in log and " passed" in log
    back = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(back) <= 8  # what the device tool hands back
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["cases"]
    model = tmp_path / "out" / "model"
    from facebatch.nets.checkpoints import load_networks

    assert load_networks(model / "latest.safetensors").G.img_resolution == 64
    train = load("train")
    state = torch.load(train.join_state_parts(model, tmp_path / "state.pt"), weights_only=False)
    from facebatch.nets.native_format import read_native

    start = int(float(read_native(REPO / "models" / "celeba64" / "celeba64.safetensors").extra["kimg"]) * 1000)
    assert state["nimg"] == start + 3 * 4  # the built-in model's images seen, then the dry run's 3 steps of 4
    assert {"G", "D", "G_ema", "opt_g", "opt_d"} <= set(state)
