"""Reconstruction scores per image pair: pixel, structural, perceptual and discriminator-feature residuals.

Shared by projection, augmentation scoring and fake/anomaly detection. Every score is computed
per image (D features are taken before minibatch-std), so a score never depends on batch mates.
Residuals are means rather than AnoGAN's sums, so scores compare across resolutions.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_msssim import ssim

from facebatch.nets.perceptual import DEFAULT_BACKEND, LpipsDistance, build_perceptual

SCORE_KEYS = ("mse", "psnr", "ssim", "perceptual", "l1", "d_residual", "anomaly_score")
# Scores a projection has only with an encoder (the column stays empty otherwise)
ENCODER_SCORE_KEYS = ("encoder_consistency",)
ROW_SCORE_KEYS = SCORE_KEYS + ENCODER_SCORE_KEYS  # the score columns of a `project` row


def _perceptual_net(perceptual, device) -> LpipsDistance | None:
    if perceptual is None or isinstance(perceptual, LpipsDistance):
        return perceptual
    return build_perceptual(str(perceptual), device)


def psnr_of_mse(mse: torch.Tensor) -> np.ndarray:
    """PSNR in dB from the mean squared error of [-1, 1] pixels (peak to peak 2): 10 log10(2^2 / mse)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(4.0 / mse.detach().cpu().double().numpy())


@torch.no_grad()
def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> np.ndarray:
    """PSNR in dB of [B,3,R,R] image pairs in [-1, 1] (clamped), per pair, over the pixels where `mask`
    [B,1,R,R] is 1 (all of them without one); NaN for an empty mask. A mixed image is judged on its region."""
    a, b = a.float().clamp(-1, 1), b.float().clamp(-1, 1)
    mask = torch.ones_like(a[:, :1]) if mask is None else mask.float()
    area = 3 * mask.sum(dim=(1, 2, 3))
    out = psnr_of_mse(((a - b).square() * mask).sum(dim=(1, 2, 3)) / area.clamp_min(1))
    out[area.cpu().numpy() == 0] = np.nan
    return out


@torch.no_grad()
def score_pairs(
    targets: torch.Tensor,
    reconstructions: torch.Tensor,
    D=None,
    perceptual: LpipsDistance | str | None = DEFAULT_BACKEND,
    lam: float = 0.1,
    target_features: list[torch.Tensor] | None = None,
) -> dict[str, np.ndarray]:
    """Scores of [B,3,R,R] image pairs in [-1, 1] (clamped first, as they would be saved).

    mse is on [-1, 1] pixels, so psnr = 10 log10(2^2 / mse); l1 is AnoGAN's pixel residual;
    d_residual is the mean |D.features(x) - D.features(G(w))| (NaN without D); anomaly_score is
    (1 - lam) * l1 + lam * d_residual, or l1 alone without D. perceptual is NaN for backend none.
    `target_features`: the perceptual net's fp32 features of `targets`, when the caller has them already
    (a projector computes them for its loss): one trunk pass per image instead of two.
    """
    x = targets.detach().float().clamp(-1, 1)
    y = reconstructions.detach().float().to(x.device).clamp(-1, 1)
    diff = x - y
    mse = diff.square().mean(dim=(1, 2, 3))
    l1 = diff.abs().mean(dim=(1, 2, 3)).cpu().double().numpy()
    nan = np.full(len(x), np.nan)
    net = _perceptual_net(perceptual, x.device)
    if net is None:
        perc = nan
    elif target_features is not None:
        perc = net.distance_features(target_features, net.features(y)).cpu().double().numpy()
    else:
        perc = net(x, y).cpu().double().numpy()
    if D is not None:
        dev = next(D.parameters()).device
        d_res = (D.features(x.to(dev)) - D.features(y.to(dev))).abs().mean(dim=(1, 2, 3)).cpu().double().numpy()
        anomaly = (1.0 - lam) * l1 + lam * d_res
    else:
        d_res, anomaly = nan, l1.copy()
    return {
        "mse": mse.cpu().double().numpy(),
        "psnr": psnr_of_mse(mse),
        "ssim": ssim((x + 1) / 2, (y + 1) / 2, data_range=1.0, size_average=False).cpu().double().numpy(),
        "perceptual": perc,
        "l1": l1,
        "d_residual": d_res,
        "anomaly_score": anomaly,
    }
