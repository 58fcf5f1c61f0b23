"""Projection quality on real faces: the built-in celeba64 generator must beat the mean face on `val`.

The mean face (the pixel mean of 64 `train` faces) is the best a projector that learnt nothing about the
image could return; a few steps of `fast` must reconstruct each face clearly better than it. Larger
figures (more faces, steps, presets, detection and edits) come from bench/quality.py.
"""

import pandas as pd
import pytest
import torch
from conftest import DATA, celeba64_measured, require

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 30
# Floors at half the gains models/celeba64/measure.py measured for the built-in model (metrics.json, the same
# call): a projector that stops moving or diverges fails them.
MARGIN = 0.5


def test_fast_projection_of_val_faces_beats_the_mean_face():
    import facebatch as fb
    from facebatch.invert.scores import score_pairs
    from facebatch.pipeline.images import load_image

    root = require(DATA / "celeba10k")
    split = pd.read_csv(root / "split.csv")
    val = [root / "images" / i for i in split[split.split == "val"].image_id[:4]]
    train = [root / "images" / i for i in split[split.split == "train"].image_id[:64]]
    nets = fb.load_generator("celeba64")
    R = nets.G.img_resolution
    mean_face = torch.stack([load_image(p, R)[0] for p in train]).mean(0, keepdim=True)
    targets = torch.stack([load_image(p, R)[0] for p in val])
    baseline = score_pairs(targets, mean_face.expand_as(targets), perceptual=None)["psnr"]
    table = fb.project(val, nets, preset="fast", overrides={"steps": STEPS}, batch_size=4)
    psnr = table.frame.psnr.to_numpy()
    assert (table.frame.status == "ok").all()
    measured = celeba64_measured()["inversion"]
    assert (psnr - baseline).min() > MARGIN * measured["fast30_gain_over_mean_face_min"], (psnr, baseline)
    assert psnr.mean() - baseline.mean() > MARGIN * measured["fast30_gain_over_mean_face_mean"], (psnr, baseline)
