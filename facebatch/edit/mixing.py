"""Image2StyleGAN / Image2StyleGAN++ applications and facial expression transfer, as pure functions over batches.

Latent maths (no networks): morphing, layer crossover, expression transfer by a per-layer mask
alpha (Yang & Lim: ``w = alpha * w_expr + (1 - alpha) * w_app``) or by a neutral-to-expression
offset (Image2StyleGAN: ``w_target + (w_expr - w_neutral)``).

Projections with masked losses (Image2StyleGAN++), each one run of a
:class:`facebatch.invert.projector.Projector` over a batch of pairs:
- crossover: one W+ optimisation towards A inside the mask and B outside (MSE to the composite,
  one perceptual term per side), then the projector's noise phase on the same masked MSE;
- inpaint: the loss sees only the known pixels, the generator fills the hole;
- style transfer: content (MSE + perceptual) outside the mask, a Gram-matrix loss of the
  perceptual network's features towards the style image inside it (latent phase only, as in the
  paper's general loss; the noise phase keeps the content MSE).
Whether a noise phase runs is the projector's config (``image2stylegan++``: sequential).

Shapes: latents [B, num_ws, w_dim]; images [B, 3, R, R] in [-1, 1]; masks [B, 1, R, R] or one
mask shared by the batch. Every image of a batch is optimised independently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facebatch.edit.layers import format_layers, parse_layers
from facebatch.edit.masks import as_mask_batch
from facebatch.errors import InputError
from facebatch.invert.losses import masked_mse
from facebatch.invert.projector import Callback, PerceptualTerm, ProjectionResult, Projector

__all__ = [
    "DEFAULT_ALPHA_LAYERS",
    "STYLE_LAYERS",
    "MixResult",
    "alpha_sweep",
    "check_alpha",
    "content_error",
    "crossover",
    "expression_offset",
    "expression_sweep",
    "expression_transfer",
    "inpaint",
    "layer_crossover",
    "masked_gram",
    "morph",
    "parse_alpha_layers",
    "render",
    "style_distance",
    "style_transfer",
]

DEFAULT_ALPHA_LAYERS = (3, 4)  # Yang & Lim's alpha = diag(0,0,0,1,1,0,...): expression from layers 3-4
STYLE_LAYERS = (0, 1, 2, 3)  # perceptual trunk taps for the Gram loss (VGG16 relu1_2 ... relu4_3)
DEFAULT_STYLE_WEIGHT = 1.0  # the style loss is a relative Gram error, O(1) at the start


@dataclass
class MixResult:
    ws: torch.Tensor  # [B, num_ws, w_dim] the optimised codes
    noise: list[torch.Tensor] | None  # per layer [B, 1, r, r] when the config optimises noise maps
    images: torch.Tensor  # [B, 3, R, R] the generator's render of (ws, noise): the result
    composite: torch.Tensor | None  # [B, 3, R, R] crossover: cut-and-paste of the inputs; inpaint: known + filled
    projection: ProjectionResult  # losses per step, scores against the optimisation target


# -- latent maths ----------------------------------------------------------------------------------


def _same_codes(w_a: torch.Tensor, w_b: torch.Tensor) -> None:
    if w_a.ndim != 3 or w_a.shape != w_b.shape:
        raise InputError(f"codes must both be [B, num_ws, w_dim], got {list(w_a.shape)} and {list(w_b.shape)}")


def morph(
    w_a: torch.Tensor,
    w_b: torch.Tensor,
    ts: Sequence[float] | int,
    noise_a: list[torch.Tensor] | None = None,
    noise_b: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Codes (1-t) w_a + t w_b for each t: [B, T, num_ws, w_dim]; noise maps the same way, [B, T, 1, r, r] per layer.

    `ts` is a list of t values or a frame count (evenly from 0 to 1). t = 0 gives w_a exactly, t = 1 w_b.
    """
    _same_codes(w_a, w_b)
    t = torch.linspace(0.0, 1.0, ts) if isinstance(ts, int) else torch.as_tensor(list(ts), dtype=torch.float32)
    if t.ndim != 1 or t.numel() == 0:
        raise InputError("morph needs at least one t value")

    def lerp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        tt = t.to(a.device, a.dtype).reshape(1, -1, *([1] * (a.ndim - 1)))
        return (1 - tt) * a[:, None] + tt * b[:, None]

    codes = lerp(w_a, w_b)
    if (noise_a is None) != (noise_b is None):
        raise InputError("morph noise maps: give both noise_a and noise_b, or neither")
    if noise_a is None:
        return codes, None
    if len(noise_a) != len(noise_b) or any(a.shape != b.shape for a, b in zip(noise_a, noise_b)):
        raise InputError("noise_a and noise_b must be maps of the same layers and shapes")
    return codes, [lerp(a, b) for a, b in zip(noise_a, noise_b)]


@torch.no_grad()
def render(
    G, ws: torch.Tensor, noise: list[torch.Tensor] | None = None, noise_mode: str = "const", chunk: int = 16
) -> torch.Tensor:
    """Images of codes [..., num_ws, w_dim] (with noise maps [..., 1, r, r] of the same leading shape, or
    the generator's `noise_mode`): [..., 3, R, R], rendered `chunk` at a time."""
    lead = ws.shape[:-2]
    flat = ws.reshape(-1, *ws.shape[-2:])
    maps = [n.reshape(-1, *n.shape[-3:]) for n in noise] if noise is not None else None
    device = next(G.parameters()).device
    out = []
    for i in range(0, flat.shape[0], chunk):
        w = flat[i : i + chunk].to(device)
        if maps is None:
            out.append(G.synthesis(w, noise_mode=noise_mode).cpu())
        else:
            out.append(G.synthesis(w, noise=[n[i : i + chunk].to(device) for n in maps]).cpu())
    images = torch.cat(out)
    return images.reshape(*lead, *images.shape[1:])


def layer_crossover(w_a: torch.Tensor, w_b: torch.Tensor, layers: int | str | Sequence[int]) -> torch.Tensor:
    """Image2StyleGAN's style transfer: the given layers (an int k: the first k) from A, the rest from B."""
    _same_codes(w_a, w_b)
    num_ws = w_a.shape[1]
    if isinstance(layers, int):
        if not 0 <= layers <= num_ws:
            raise InputError(f"crossover point {layers} out of range: the codes have {num_ws} layers")
        chosen = list(range(layers))
    else:
        chosen = parse_layers(layers, num_ws)
    take_a = torch.zeros(num_ws, dtype=torch.bool, device=w_a.device)
    take_a[chosen] = True
    return torch.where(take_a[None, :, None], w_a, w_b)


def parse_alpha_layers(spec: str | Sequence[int], num_ws: int) -> torch.Tensor:
    """`--alpha-layers` ("3,4", "3-4", or indices) -> alpha [num_ws]: 1 on those layers, 0 elsewhere."""
    alpha = torch.zeros(num_ws)
    alpha[parse_layers(spec, num_ws)] = 1.0
    return alpha


def check_alpha(alpha: torch.Tensor | Sequence[float], num_ws: int) -> torch.Tensor:
    """An explicit alpha ([num_ws], or [B, num_ws] per pair) as float32, after checking its length and range."""
    alpha = torch.as_tensor(alpha, dtype=torch.float32)
    if alpha.ndim not in (1, 2) or alpha.shape[-1] != num_ws:
        raise InputError(
            f"alpha needs one value per layer: got {alpha.shape[-1] if alpha.ndim else 1} value(s), "
            f"the codes have {num_ws} layers"
        )
    if not (torch.isfinite(alpha).all() and alpha.min() >= 0 and alpha.max() <= 1):  # nan passes comparisons
        raise InputError("alpha values must lie in [0, 1]")
    return alpha


def expression_transfer(
    w_app: torch.Tensor, w_expr: torch.Tensor, alpha: torch.Tensor | Sequence[float] | str | None = None
) -> torch.Tensor:
    """Yang & Lim: alpha * w_expr + (1 - alpha) * w_app per layer; alpha None = layers 3-4, a string = layer spec."""
    _same_codes(w_app, w_expr)
    num_ws = w_app.shape[1]
    if alpha is None:
        alpha = parse_alpha_layers(list(DEFAULT_ALPHA_LAYERS), num_ws)
    elif isinstance(alpha, str):
        alpha = parse_alpha_layers(alpha, num_ws)
    else:
        alpha = check_alpha(alpha, num_ws)
    if alpha.ndim == 2 and alpha.shape[0] != w_app.shape[0]:
        raise InputError(f"per-pair alpha has {alpha.shape[0]} rows for {w_app.shape[0]} pairs")
    a = alpha.to(w_app.device, w_app.dtype).reshape(-1, num_ws, 1)
    return a * w_expr + (1 - a) * w_app


def alpha_sweep(num_ws: int, widths: Sequence[int] = (1, 2)) -> tuple[list[str], torch.Tensor]:
    """Candidate alphas for a user to pick from: every run of `widths` adjacent layers (default single layers
    and adjacent pairs). Returns labels ("3", "3-4") and alphas [K, num_ws]."""
    labels, alphas = [], []
    for width in widths:
        for start in range(num_ws - width + 1):
            layers = list(range(start, start + width))
            labels.append(format_layers(layers))
            alphas.append(parse_alpha_layers(layers, num_ws))
    return labels, torch.stack(alphas)


def expression_sweep(w_app: torch.Tensor, w_expr: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """expression_transfer for each candidate alpha [K, num_ws]: [B, K, num_ws, w_dim]."""
    return torch.stack([expression_transfer(w_app, w_expr, a) for a in check_alpha(alphas, w_app.shape[1])], dim=1)


def expression_offset(
    w_target: torch.Tensor, w_expr: torch.Tensor, w_neutral: torch.Tensor, strength: float = 1.0
) -> torch.Tensor:
    """Image2StyleGAN: w_target + strength * mean over the P example pairs of (w_expr - w_neutral).

    w_target [B, num_ws, w_dim]; w_expr, w_neutral [P, num_ws, w_dim] (the same person with and without
    the expression, P >= 1: averaging pairs keeps the expression and cancels identity).
    """
    _same_codes(w_expr, w_neutral)
    if w_target.ndim != 3 or w_target.shape[1:] != w_expr.shape[1:]:
        raise InputError(f"target codes {list(w_target.shape)} do not match the pairs' {list(w_expr.shape[1:])}")
    return w_target + strength * (w_expr - w_neutral).mean(dim=0, keepdim=True)


# -- masked projections ---------------------------------------------------------------------------


def _images(projector: Projector, *images: torch.Tensor) -> list[torch.Tensor]:
    shape = images[0].shape
    if any(img.shape != shape for img in images):
        raise InputError(f"the images of a pair must have one shape, got {[list(i.shape) for i in images]}")
    R = projector.G.img_resolution
    if len(shape) != 4 or tuple(shape[1:]) != (3, R, R):
        raise InputError(f"images must be [B, 3, {R}, {R}] (the generator's resolution), got {list(shape)}")
    return [img.to(torch.float32) for img in images]


def _result(res: ProjectionResult, composite: torch.Tensor | None) -> MixResult:
    return MixResult(ws=res.ws, noise=res.noise, images=res.reconstructions, composite=composite, projection=res)


def crossover(
    projector: Projector,
    img_a: torch.Tensor,
    img_b: torch.Tensor,
    mask: torch.Tensor,
    seeds: Sequence[int],
    callback: Callback | None = None,
) -> MixResult:
    """One image with A inside `mask` (1) and B outside, blended by the generator (Image2StyleGAN++ crossover).

    MSE to the composite M*A + (1-M)*B (the paper's 1/N ||M (G - A)||^2 + 1/N ||(1-M) (G - B)||^2), a
    perceptual term to A inside M and one to B outside; the noise phase, if configured, fits the same MSE.
    `composite` in the result is that cut-and-paste, the seam the generator is there to hide.
    """
    img_a, img_b = _images(projector, img_a, img_b)
    m = as_mask_batch(mask, img_a.shape[0], img_a.shape[-1])
    composite = m * img_a + (1 - m) * img_b
    terms = [PerceptualTerm(img_a, m), PerceptualTerm(img_b, 1 - m)]
    res = projector.project(composite, seeds, callback=callback, perceptual_terms=terms)
    return _result(res, composite)


def inpaint(
    projector: Projector,
    img: torch.Tensor,
    known_mask: torch.Tensor,
    seeds: Sequence[int],
    callback: Callback | None = None,
) -> MixResult:
    """Fill the pixels where `known_mask` is 0: project with the loss on the known pixels only.

    `images` is the generator's whole render; `composite` keeps the known pixels and takes the hole from it.
    """
    (img,) = _images(projector, img)
    known = as_mask_batch(known_mask, img.shape[0], img.shape[-1])
    res = projector.project(img, seeds, masks=known, callback=callback)
    return _result(res, known * img + (1 - known) * res.reconstructions)


def masked_gram(feats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gram matrix [B, C, C] of feature maps [B, C, h, w] averaged over the mask (area-resized to h x w):
    sum_p m_p f_p f_p^T / (C sum_p m_p); no mask = every position."""
    B, C, h, w = feats.shape
    flat = feats.reshape(B, C, h * w)
    if mask is None:
        weights = torch.ones(B, 1, h * w, device=feats.device, dtype=feats.dtype)
    else:
        weights = F.interpolate(mask, size=(h, w), mode="area").reshape(B, 1, h * w)
    area = weights.sum(dim=2, keepdim=True).clamp_min(1e-8)
    return (flat * weights) @ flat.transpose(1, 2) / (C * area)


def _grams(perceptual, images, mask, layers) -> list[torch.Tensor]:
    feats = perceptual.raw_features(images)
    return [masked_gram(feats[i], mask) for i in layers]


def _gram_loss(grams: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    # Relative error per layer, so the layers (whose activations differ by orders of magnitude) weigh alike.
    total = 0.0
    for g, t in zip(grams, targets):
        total = total + (g - t).square().sum(dim=(1, 2)) / t.square().sum(dim=(1, 2)).clamp_min(1e-12)
    return total / len(grams)


def _style_net(projector: Projector):
    if projector.perceptual is None:
        raise InputError(
            "style transfer reads the perceptual network's features: choose a perceptual backend, not none"
        )
    return projector.perceptual


@torch.no_grad()
def style_distance(
    projector: Projector,
    images: torch.Tensor,
    style: torch.Tensor,
    mask: torch.Tensor,
    style_mask: torch.Tensor | None = None,
    layers: Sequence[int] = STYLE_LAYERS,
) -> torch.Tensor:
    """The style loss style_transfer minimises, per image [B]: Gram of `images` inside `mask` against `style`'s."""
    net = _style_net(projector)
    device = projector.device
    B, R = images.shape[0], images.shape[-1]
    m = as_mask_batch(mask, B, R).to(device)
    sm = as_mask_batch(style_mask, B, R).to(device) if style_mask is not None else None
    target = _grams(net, style.to(device, torch.float32), sm, layers)
    return _gram_loss(_grams(net, images.to(device, torch.float32), m, layers), target).cpu()


def style_transfer(
    projector: Projector,
    content: torch.Tensor,
    style: torch.Tensor,
    mask: torch.Tensor,
    seeds: Sequence[int],
    *,
    style_weight: float = DEFAULT_STYLE_WEIGHT,
    style_mask: torch.Tensor | None = None,
    content_everywhere: bool = False,
    layers: Sequence[int] = STYLE_LAYERS,
    callback: Callback | None = None,
) -> MixResult:
    """Image2StyleGAN++ local style transfer: `content`'s image with `style`'s texture inside `mask`.

    Loss: the projector's MSE + perceptual terms to `content` outside the mask (everywhere with
    `content_everywhere`), plus style_weight * the mean over `layers` of the relative Gram-matrix
    error ||Gram_M(G) - Gram(style)||^2 / ||Gram(style)||^2 of the perceptual trunk's raw features,
    the render's Gram taken inside `mask`, the style's inside `style_mask` (default: all of it).
    The style term acts in the latent phase only; a noise phase fits the content MSE.
    """
    content, style = _images(projector, content, style)
    net = _style_net(projector)
    B, R = content.shape[0], content.shape[-1]
    bad = [i for i in layers if not 0 <= i < 5]
    if bad or not layers:
        raise InputError(f"style layers must be among 0-4 (the perceptual trunk's five taps), got {list(layers)}")
    device = projector.device
    m = as_mask_batch(mask, B, R).to(device)
    sm = as_mask_batch(style_mask, B, R).to(device) if style_mask is not None else None
    with torch.no_grad():
        target = _grams(net, style.to(device), sm, layers)

    def style_term(images: torch.Tensor, phase: str) -> torch.Tensor:
        if phase != "latent" or not style_weight:
            return torch.zeros(images.shape[0], device=images.device)
        return style_weight * _gram_loss(_grams(net, images, m, layers), target)

    content_mask = None if content_everywhere else (1 - m).cpu()
    res = projector.project(content, seeds, masks=content_mask, callback=callback, extra_loss=style_term)
    return _result(res, None)


def content_error(images: torch.Tensor, content: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE per image outside `mask`: how much a local style transfer disturbed the rest of the image."""
    m = as_mask_batch(mask, images.shape[0], images.shape[-1])
    return masked_mse(images.float(), content.float(), 1 - m)
