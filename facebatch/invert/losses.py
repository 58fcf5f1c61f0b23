"""Per-image loss terms: every function returns a [B] tensor, so a batch loss is a sum of independent terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F

CLIP_TOLERANCE = 1.0 / 255.0  # half an 8-bit step on [-1, 1] pixels (one step is 2/255)


def clip_aware_residual(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """images - targets, but 0 where the target sits at the 8-bit clip limit and the image overshoots it.

    A saved target pixel at 0 or 255 only says "at least this bright/dark": the generator's unclipped
    value beyond it renders to the same saved pixel, so it is not an error. A target within half an
    8-bit step of -1 (+1) and an image below (above) it give a zero residual (and no gradient);
    everywhere else the residual is the plain difference, gradients included.
    """
    diff = images - targets
    over_high = (targets >= 1.0 - CLIP_TOLERANCE) & (diff > 0)
    over_low = (targets <= -1.0 + CLIP_TOLERANCE) & (diff < 0)
    return torch.where(over_high | over_low, torch.zeros_like(diff), diff)


def masked_mse(
    images: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor | None = None, clip_aware: bool = False
) -> torch.Tensor:
    """Mean squared error over the pixels where the mask is 1 (all pixels without a mask).

    ``clip_aware``: overshoot beyond a clipped target pixel is not an error (see clip_aware_residual).
    """
    diff = clip_aware_residual(images, targets) if clip_aware else images - targets
    sq = diff.square()
    if masks is None:
        return sq.mean(dim=(1, 2, 3))
    covered = masks.sum(dim=(1, 2, 3)) * images.shape[1]
    return (sq * masks).sum(dim=(1, 2, 3)) / covered.clamp_min(1.0)


def noise_regularizer(noise: list[torch.Tensor]) -> torch.Tensor:
    """NVlabs' multi-scale autocorrelation penalty, per sample.

    For each map and each 2x average-pooled level down to 8x8: mean(n * roll(n, 1, x))^2 +
    mean(n * roll(n, 1, y))^2. The official code does this on [1,1,r,r] buffers; means over a
    sample's own map give the identical value for each sample of a [B,1,r,r] batch.
    """
    reg = 0.0
    for n in noise:
        while True:
            reg = reg + (n * torch.roll(n, shifts=1, dims=3)).mean(dim=(1, 2, 3)).square()
            reg = reg + (n * torch.roll(n, shifts=1, dims=2)).mean(dim=(1, 2, 3)).square()
            if n.shape[2] <= 8:
                break
            n = F.avg_pool2d(n, kernel_size=2)
    return reg


@torch.no_grad()
def renormalize_noise_(noise: list[torch.Tensor]) -> None:
    """Zero mean, unit variance per sample and map, in place (NVlabs does it after every step)."""
    for n in noise:
        n -= n.mean(dim=(1, 2, 3), keepdim=True)
        n *= n.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
