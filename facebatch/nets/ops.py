"""Pure-PyTorch StyleGAN2 primitives: FIR resampling, bias + activation, resampled and modulated conv.

Written by hand because the official versions are CUDA extensions compiled at run time; these are
the reference semantics of NVlabs' `upfirdn2d`, `bias_act` and `conv2d_resample` so that official
weights give the official outputs on any device, with no compiler.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)


def setup_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """Separable FIR taps -> normalised 2-D filter (sum 1), as NVlabs stores in `resample_filter`."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = f.ger(f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding=(0, 0, 0, 0), gain: float = 1.0):
    """Upsample by zero insertion, pad (negative = crop), filter, downsample; padding is (x0, x1, y0, y1)."""
    n, c, h, w = x.shape
    px0, px1, py0, py1 = padding
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    # conv2d correlates; the official op convolves (flips the filter) unless told otherwise.
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype).flip([0, 1])
    x = F.conv2d(x, f[None, None].expand(c, 1, *f.shape), groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    fw = f.shape[-1]
    p0, p1 = (fw - down + 1) // 2, (fw - down) // 2
    return upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1))


def bias_act(
    x: torch.Tensor, b: torch.Tensor | None, act: str = "linear", gain: float | None = None, clamp: float | None = None
):
    """Add bias (along dim 1), activate, scale, clamp: the official fused op, unfused."""
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
        gain = SQRT2 if gain is None else gain
    elif act == "linear":
        gain = 1.0 if gain is None else gain
    else:
        raise ValueError(f"unsupported activation {act!r}")
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def conv2d_resample(x, w, f=None, up: int = 1, down: int = 1, padding: int = 0, flip_weight: bool = True):
    """Convolution with optional 2x up/down FIR resampling, following the official op's paths."""
    _, _, kh, kw = w.shape
    fw = f.shape[-1] if f is not None else 1
    px0 = px1 = padding
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
    if not flip_weight and (kw > 1 or kh > 1):
        w_c = w.flip([2, 3])
    else:
        w_c = w

    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=(px0, px1, px0, px1))
        return F.conv2d(x, w_c)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=(px0, px1, px0, px1))
        return F.conv2d(x, w_c, stride=down)
    if up > 1 and down == 1:
        px0 -= kw - 1
        px1 -= kw - up
        pt = max(min(-px0, -px1), 0)
        # Transposed conv: the official op flips relative to the direct path.
        w_t = (w.flip([2, 3]) if flip_weight and (kw > 1 or kh > 1) else w).transpose(0, 1)
        x = F.conv_transpose2d(x, w_t, stride=up, padding=pt)
        return upfirdn2d(x, f, padding=(px0 + pt, px1 + pt, px0 + pt, px1 + pt), gain=up * up)
    if up == 1 and down == 1:
        return F.conv2d(x, w_c, padding=padding)
    raise NotImplementedError(f"conv2d_resample(up={up}, down={down}) is not needed by StyleGAN2")


def modulated_conv2d(
    x,
    weight,
    styles,
    noise=None,
    up: int = 1,
    padding: int = 0,
    resample_filter=None,
    demodulate=True,
    flip_weight=True,
):
    """Per-sample modulated conv as scale -> shared conv -> per-sample demodulation.

    The official code folds styles into a per-sample weight and runs a grouped conv, which is slow
    on CPU for batches; scaling activations instead lets one shared conv serve the whole batch.
    The demodulation coefficients use sum_i s_i^2 * sum_k w_oik^2, which equals the official
    sum over the modulated weight without building an [N, out, in, k, k] tensor.
    """
    n = x.shape[0]
    if demodulate:
        wsq = weight.square().sum(dim=[2, 3])  # [out, in]
        dcoefs = (styles.square() @ wsq.t() + 1e-8).rsqrt()  # [N, out]
    x = x * styles.reshape(n, -1, 1, 1)
    x = conv2d_resample(x, weight, f=resample_filter, up=up, padding=padding, flip_weight=flip_weight)
    if demodulate:
        x = x * dcoefs.reshape(n, -1, 1, 1)
    if noise is not None:
        x = x + noise
    return x
