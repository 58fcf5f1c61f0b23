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


def test_clip_aware_residual_is_zero_only_for_overshoot_beyond_a_clipped_target():
    from facebatch.invert.losses import clip_aware_residual

    half_step = 1.0 / 255.0
    # Targets: at the top limit, at the bottom limit, within half a step of each, one step inside, mid-grey.
    t = torch.tensor([1.0, -1.0, 1.0 - 0.9 * half_step, -1.0 + 0.9 * half_step, 1.0 - 2 * half_step, 0.0])
    over = torch.tensor([1.3, -1.4, 1.2, -1.2, 1.2, 0.5])  # beyond each target, away from the middle
    under = torch.tensor([0.7, -0.6, 0.8, -0.8, 0.8, -0.5])  # toward the middle
    as_img = lambda v: v.reshape(1, 1, 1, -1)  # noqa: E731
    r_over = clip_aware_residual(as_img(over), as_img(t)).flatten()
    r_under = clip_aware_residual(as_img(under), as_img(t)).flatten()
    # Overshoot beyond a clipped pixel (the first four) is no error; one 8-bit step inside the limit it is.
    assert r_over[:4].tolist() == [0.0] * 4
    torch.testing.assert_close(r_over[4:], (over - t)[4:])
    torch.testing.assert_close(r_under, under - t)  # falling short of a clipped pixel is an error as before
    # Gradients flow where the residual is kept and are zero where it is dropped.
    x = as_img(over.clone()).requires_grad_(True)
    masked_mse(x, as_img(t), clip_aware=True).sum().backward()
    g = x.grad.flatten()
    assert g[:4].tolist() == [0.0] * 4 and (g[4:] != 0).all()
    # Off by default in the bare function; on, it equals the plain MSE when nothing is clipped.
    y, z = torch.rand(2, 3, 4, 4) * 1.6 - 0.8, torch.rand(2, 3, 4, 4) * 1.6 - 0.8
    torch.testing.assert_close(masked_mse(y, z, clip_aware=True), masked_mse(y, z))
    assert masked_mse(as_img(over), as_img(t)).item() > masked_mse(as_img(over), as_img(t), clip_aware=True).item()
