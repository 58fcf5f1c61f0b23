"""Reconstruction scores: the formulas, clamping, the AnoGAN combination, and no coupling through D's minibatch-std."""

import math

import numpy as np
import pytest
import torch

from facebatch.invert.scores import SCORE_KEYS, score_pairs


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 64, 64, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(4, 3, 64, 64, generator=g)).clamp(-1, 1)
    return x, y


def test_pixel_scores_follow_their_formulas():
    x = torch.zeros(2, 3, 64, 64)
    y = torch.full_like(x, 0.1)
    y[1] = x[1]
    s = score_pairs(x, y, perceptual=None)
    assert s["mse"][0] == pytest.approx(0.01, rel=1e-5) and s["l1"][0] == pytest.approx(0.1, rel=1e-5)
    assert s["psnr"][0] == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-5)  # peak-to-peak 2 on [-1, 1]
    assert s["psnr"][1] == np.inf and s["ssim"][1] == pytest.approx(1.0)
    assert np.isnan(s["perceptual"]).all() and np.isnan(s["d_residual"]).all()
    assert np.array_equal(s["anomaly_score"], s["l1"])  # no D: the pixel residual alone
    assert set(s) == set(SCORE_KEYS)


def test_images_are_clamped_as_saved():
    x = torch.ones(1, 3, 64, 64)
    s = score_pairs(x, x * 5, perceptual=None)  # a generator overshoot saves as the same white image
    assert s["mse"][0] == 0 and s["l1"][0] == 0


def test_ssim_drops_with_noise(images):
    x, _ = images
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    mild = score_pairs(x, x + 0.1 * noise, perceptual=None)["ssim"]
    strong = score_pairs(x, x + 0.5 * noise, perceptual=None)["ssim"]
    assert (strong < mild).all() and (mild < 1).all() and (strong > 0).all()


@torch.no_grad()
def test_anomaly_score_combines_residuals_with_lambda(images, nvlabs_D):
    x, y = images
    s = score_pairs(x, y, D=nvlabs_D, perceptual=None, lam=0.25)
    d_res = (nvlabs_D.features(x) - nvlabs_D.features(y)).abs().mean(dim=(1, 2, 3)).double().numpy()
    assert np.allclose(s["d_residual"], d_res, rtol=1e-6)
    assert np.allclose(s["anomaly_score"], 0.75 * s["l1"] + 0.25 * d_res, rtol=1e-6)


def test_scores_do_not_depend_on_batch_mates(images, nvlabs_D):
    x, y = images
    full = score_pairs(x, y, D=nvlabs_D, perceptual="stlpips-vgg")
    swapped_mates = score_pairs(
        torch.cat([x[:1], -x[1:]]), torch.cat([y[:1], y[1:].flip(-1)]), D=nvlabs_D, perceptual="stlpips-vgg"
    )
    alone = score_pairs(x[:1], y[:1], D=nvlabs_D, perceptual="stlpips-vgg")
    for key in SCORE_KEYS:
        assert swapped_mates[key][0] == pytest.approx(full[key][0], rel=1e-5), key
        assert alone[key][0] == pytest.approx(full[key][0], rel=1e-5), key
    # D(x) itself would not pass this: its minibatch-std layer mixes the 4 samples.
    with torch.no_grad():
        logits = nvlabs_D(x)[0]
        logits_mates = nvlabs_D(torch.cat([x[:1], -x[1:]]))[0]
    assert not torch.allclose(logits, logits_mates, rtol=1e-5)
