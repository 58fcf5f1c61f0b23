"""Learning-rate and latent-noise schedules of the NVlabs projector, as functions of t = step / steps.

Written from the formulas in NVlabs stylegan2-ada-pytorch ``projector.py``;
a ramp length of 0 switches that ramp off, which gives the constant schedules of Image2StyleGAN.
"""

from __future__ import annotations

import math


def lr_at(t: float, base_lr: float, rampup: float, rampdown: float) -> float:
    """``base_lr * cosine ramp-down over the last `rampdown` * linear ramp-up over the first `rampup```."""
    ramp = 1.0
    if rampdown > 0:
        ramp = min(1.0, (1.0 - t) / rampdown)
        ramp = 0.5 - 0.5 * math.cos(math.pi * ramp)
    if rampup > 0:
        ramp *= min(1.0, t / rampup)
    return base_lr * ramp


def w_noise_scale_at(t: float, w_std: float, factor: float, ramp: float) -> float:
    """Std of the gaussian added to w each step: ``w_std * factor * max(0, 1 - t/ramp)^2``."""
    if factor <= 0 or ramp <= 0:
        return 0.0
    return w_std * factor * max(0.0, 1.0 - t / ramp) ** 2
