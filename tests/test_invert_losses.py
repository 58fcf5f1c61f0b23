"""Per-image loss terms: the batched noise regulariser equals NVlabs' one-image formula, sample by sample."""

import pytest
import torch
import torch.nn.functional as F

from facebatch.invert.losses import masked_mse, noise_regularizer, renormalize_noise_


def official_reg(maps):
    """stylegan2-ada-pytorch projector.py, written out for [r, r] buffers of one image."""
    reg = 0.0
    for v in maps:
        noise = v[None, None, :, :]
        while True:
            reg += (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            reg += (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return reg


def test_noise_regularizer_is_the_official_one_per_sample():
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(3, 1, r, r, generator=g) for r in (4, 8, 8, 16, 16, 32, 32)]
    maps[2] = maps[2] + 0.5 * torch.roll(maps[2], 1, dims=3)  # a correlated map, so the penalty is not tiny
    batched = noise_regularizer(maps)
    for i in range(3):
        assert batched[i].item() == pytest.approx(official_reg([m[i, 0] for m in maps]).item(), rel=1e-5)


def test_renormalize_is_per_sample_and_map():
    g = torch.Generator().manual_seed(1)
    maps = [torch.randn(2, 1, 16, 16, generator=g) * torch.tensor([3.0, 0.5]).view(2, 1, 1, 1) + 2]
    renormalize_noise_(maps)
    assert maps[0].mean(dim=(1, 2, 3)).abs().max() < 1e-6
    assert (maps[0].square().mean(dim=(1, 2, 3)) - 1).abs().max() < 1e-5


def test_masked_mse_averages_over_covered_pixels_only():
    x = torch.zeros(2, 3, 4, 4)
    y = torch.zeros_like(x)
    y[:, :, :, 2:] = 1.0  # error only on the right half
    left = torch.zeros(2, 1, 4, 4)
    left[..., :2] = 1
    assert masked_mse(x, y).tolist() == [0.5, 0.5]
    assert masked_mse(x, y, left).tolist() == [0.0, 0.0]
    assert masked_mse(x, y, 1 - left).tolist() == [1.0, 1.0]
