"""Batched projection of images into a StyleGAN2 generator: W / W+ codes and noise maps, one graph per batch.

Each image has its own latent, its own noise maps and its own RNG (seeded per image); the batch
loss is a sum of per-image terms and Adam is element-wise, so projecting B images together gives
each the result it gets alone (up to float rounding of batched convolutions).
Phases: the latent phase optimises w (and, for ``noise_optimization=joint``, the noise maps as
the NVlabs projector does); ``sequential`` then optimises the noise maps with w fixed
(Image2StyleGAN++).
Masked losses (Image2StyleGAN++): `masks` restricts the MSE (and by default the perceptual term)
to some pixels; `perceptual_terms` replaces the one perceptual term by several, each comparing the
render inside its own mask with its own image (a crossover compares with A inside M and with B
outside, while the MSE reads a composite target); `extra_loss` adds any other per-image term (a
Gram-matrix style loss) without another copy of the optimisation loop.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from facebatch.errors import InputError
from facebatch.invert.losses import masked_mse, noise_regularizer, renormalize_noise_
from facebatch.invert.presets import ProjectionConfig, load_preset
from facebatch.invert.schedules import lr_at, w_noise_scale_at
from facebatch.invert.scores import score_pairs
from facebatch.nets.perceptual import build_perceptual

# callback(step, total_steps, per-image losses of that step)
Callback = Callable[[int, int, np.ndarray], None]
# extra_loss(images [B,3,R,R] of this step, phase "latent" | "noise") -> per-image loss [B], added to the loss
ExtraLoss = Callable[[torch.Tensor, str], torch.Tensor]

_W_STATS: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


@dataclass
class PerceptualTerm:
    """Perceptual distance between the render and `target`, both multiplied by `mask` (None: whole image)."""

    target: torch.Tensor  # [B, 3, R, R] in [-1, 1]
    mask: torch.Tensor | None = None  # [B, 1, R, R], 1 where this term looks


@dataclass
class ProjectionResult:
    ws: torch.Tensor  # [B, num_ws, w_dim] float32, cpu
    noise: list[torch.Tensor] | None  # per layer [B, 1, r, r] when noise maps were optimised
    reconstructions: torch.Tensor  # [B, 3, R, R], cpu
    scores: dict[str, np.ndarray]  # per image, see facebatch.invert.scores.SCORE_KEYS (+ ENCODER_SCORE_KEYS)
    perceptual_backend: str
    losses: np.ndarray  # [steps, B]
    steps: int


@torch.no_grad()
def w_stats(G, samples: int = 10000, seed: int = 123, device="cpu") -> tuple[torch.Tensor, float]:
    """NVlabs' start point and spread: mean and scalar std of w over `samples` z from RandomState(seed).

    Cached per generator (weakly), because every batch of a run needs the same numbers.
    """
    cache = _W_STATS.setdefault(G, {})
    if (samples, seed) not in cache:
        z = np.random.RandomState(seed).randn(samples, G.z_dim)
        w = (
            torch.cat(
                [
                    G.mapping(torch.from_numpy(chunk).float().to(device), None)[:, :1, :].cpu()
                    for chunk in np.array_split(z, max(1, samples // 2000))
                ]
            )
            .numpy()
            .astype(np.float32)
        )
        w_avg = np.mean(w, axis=0, keepdims=True)  # [1, 1, w_dim]
        w_std = float((np.sum((w - w_avg) ** 2) / samples) ** 0.5)
        cache[(samples, seed)] = (torch.from_numpy(w_avg), w_std)
    w_avg, w_std = cache[(samples, seed)]
    return w_avg.to(device), w_std


def resolve_autocast(setting: str, device: torch.device) -> str:
    """The precision an ``autocast`` setting means on `device`: auto is bf16 on a CPU with oneDNN bf16, else none."""
    if setting != "auto":
        return setting
    if device.type == "cpu":
        try:
            return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "none"
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return "none"
    return "none"


@contextlib.contextmanager
def _frozen(*modules):
    """No parameter gradients for the networks while we differentiate w.r.t. latents (restored after)."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _const_noise(G, batch: int, mode: str) -> list[torch.Tensor]:
    """The maps the generator uses for noise_mode `mode`, per sample: the start of a sequential noise phase."""
    maps = []
    for block in G.synthesis.blocks():
        for layer in block.noise_layers():
            base = layer.noise_const if mode == "const" else torch.zeros_like(layer.noise_const)
            maps.append(base.detach()[None, None].repeat(batch, 1, 1, 1))
    return maps


class Projector:
    """Holds the frozen networks, the perceptual net and the w statistics; `project` runs one batch."""

    def __init__(self, G, D=None, config: ProjectionConfig | None = None, device="cpu", encoder=None):
        self.config = (config or load_preset()).validate()
        self.device = torch.device(device)
        self.G = G.eval().to(self.device)
        self.D = D.eval().to(self.device) if D is not None else None
        # An image -> W+ encoder (facebatch.nets.encoder.Encoder): the start of `init: encoder` presets and
        # the encoder-consistency score. Its own threads of numbers stay fp32 (it is cheap beside G).
        self.encoder = encoder.eval().to(self.device) if encoder is not None else None
        if self.config.init == "encoder" and self.encoder is None:
            raise InputError(f"preset {self.config.name!r} starts from an encoder (init: encoder); none was given")
        self.perceptual = build_perceptual(self.config.perceptual, self.device)
        self.w_avg, self.w_std = w_stats(G, self.config.w_avg_samples, self.config.w_avg_seed, self.device)
        if self.config.channels_last:
            # In place, like the .to(device) above; numerically the same network, only the layout changes.
            self.G.to(memory_format=torch.channels_last)
            if self.perceptual is not None:
                self.perceptual.to(memory_format=torch.channels_last)
        self.autocast = resolve_autocast(self.config.autocast, self.device)
        self._amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.autocast]

    def _amp(self):
        """The optimisation steps' autocast context (a no-op for autocast=none, the fp32 reference)."""
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._amp_dtype)

    # -- one step's pieces --------------------------------------------------------------------
    def _synth(self, ws: torch.Tensor, noise: list[torch.Tensor] | None) -> torch.Tensor:
        if noise is not None:
            return self.G.synthesis(ws, noise=noise)
        return self.G.synthesis(ws, noise_mode=self.config.noise_mode)

    def _tile(self, w: torch.Tensor) -> torch.Tensor:
        return w.repeat(1, self.G.num_ws, 1) if w.shape[1] == 1 else w

    def _image_loss(self, images, targets, masks, perceptual, mse_weight, perceptual_weight) -> torch.Tensor:
        """MSE to `targets` inside `masks`, plus one perceptual distance per (mask, target features) pair."""
        loss = torch.zeros(images.shape[0], device=images.device)
        if mse_weight:
            loss = loss + mse_weight * masked_mse(images, targets, masks, self.config.clip_aware_mse)
        if perceptual_weight and self.perceptual is not None:
            for mask, target_feats in perceptual:
                masked = images * mask if mask is not None else images
                feats = self.perceptual.features(masked, self._amp_dtype)
                loss = loss + perceptual_weight * self.perceptual.distance_features(feats, target_feats)
        return loss

    def _check(self, targets, seeds, masks, perceptual_terms=None) -> None:
        R = self.G.img_resolution
        if targets.ndim != 4 or tuple(targets.shape[1:]) != (3, R, R):
            raise InputError(
                f"targets must be [B, 3, {R}, {R}] (the generator's resolution), got {list(targets.shape)}"
            )
        if len(seeds) != targets.shape[0]:
            raise InputError(f"one seed per image: {len(seeds)} seeds for {targets.shape[0]} images")
        if masks is not None and tuple(masks.shape) != (targets.shape[0], 1, R, R):
            raise InputError(f"masks must be [B, 1, {R}, {R}], got {list(masks.shape)}")
        for term in perceptual_terms or ():
            if tuple(term.target.shape) != tuple(targets.shape):
                raise InputError(
                    f"perceptual term targets must be {list(targets.shape)}, got {list(term.target.shape)}"
                )
            if term.mask is not None and tuple(term.mask.shape) != (targets.shape[0], 1, R, R):
                raise InputError(f"perceptual term masks must be [B, 1, {R}, {R}], got {list(term.mask.shape)}")

    def _randn(self, gens: list[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
        # Drawn on the CPU from each image's own generator: the same numbers on every device and batch.
        return torch.stack([torch.randn(tuple(shape), generator=g) for g in gens]).to(self.device)

    def _optimise(self, params, steps, base_lr, loss_fn, noise, log, callback, offset, total) -> None:
        cfg = self.config
        opt = torch.optim.Adam(params, lr=base_lr, betas=(cfg.beta1, cfg.beta2))
        for step in range(steps):
            t = step / steps
            for group in opt.param_groups:
                group["lr"] = lr_at(t, base_lr, cfg.lr_rampup, cfg.lr_rampdown)
            per_image = loss_fn(t)
            opt.zero_grad(set_to_none=True)
            per_image.sum().backward()
            opt.step()
            if noise is not None and cfg.noise_renormalize:
                renormalize_noise_(noise)
            row = per_image.detach().cpu().numpy()
            log.append(row)
            if callback is not None:
                callback(offset + step + 1, total, row)

    @torch.no_grad()
    def encoder_consistency(self, reconstructions: torch.Tensor, ws: torch.Tensor) -> np.ndarray:
        """f-AnoGAN's izi idea in W+: how far the encoder puts the reconstruction from the code that made it,
        mean squared distance per dimension in units of w's variance per dimension (0: E(G(w)) = w).
        Images the generator can represent land where the encoder learnt to read; others drift."""
        again = self.encoder(reconstructions.clamp(-1, 1)).float()
        per_dim_var = self.w_std**2 / self.G.w_dim
        return ((again - ws.float()).square().mean(dim=(1, 2)) / per_dim_var).cpu().numpy().astype(np.float64)

    # -- the public call ----------------------------------------------------------------------
    def project(
        self,
        targets: torch.Tensor,
        seeds: Sequence[int],
        masks: torch.Tensor | None = None,
        callback: Callback | None = None,
        *,
        perceptual_terms: Sequence[PerceptualTerm] | None = None,
        extra_loss: ExtraLoss | None = None,
    ) -> ProjectionResult:
        """Project a batch of [B,3,R,R] images in [-1, 1]; `masks` [B,1,R,R] restrict the loss to 1-pixels.

        `perceptual_terms` (default: one term, `targets` inside `masks`) set the perceptual distances of
        both phases; `extra_loss` is added to every step's per-image loss. Scores compare with `targets`.
        """
        cfg = self.config
        self._check(targets, seeds, masks, perceptual_terms)
        B = targets.shape[0]
        targets = targets.to(self.device, torch.float32)
        masks = masks.to(self.device, torch.float32) if masks is not None else None
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        log: list[np.ndarray] = []
        total = cfg.total_steps

        with _frozen(self.G, self.D):
            terms = [PerceptualTerm(targets, masks)] if perceptual_terms is None else perceptual_terms
            perceptual = []  # (mask, target features) per term
            if self.perceptual is not None and total > 0:  # no steps (the encoder preset): the score's pass only
                with torch.no_grad():
                    for term in terms:
                        target = term.target.to(self.device, torch.float32)
                        mask = term.mask.to(self.device, torch.float32) if term.mask is not None else None
                        perceptual.append(
                            (
                                mask,
                                self.perceptual.features(
                                    target * mask if mask is not None else target, self._amp_dtype
                                ),
                            )
                        )

            n_lat = 1 if cfg.latent_space == "w" else self.G.num_ws
            if cfg.init == "encoder":
                with torch.no_grad():
                    start = self.encoder(targets).float()
                start = start.mean(dim=1, keepdim=True) if n_lat == 1 else start
            else:
                start = self.w_avg.reshape(1, 1, -1).repeat(B, n_lat, 1)
            w_opt = start.clone().requires_grad_(True)
            noise = None
            if cfg.noise_optimization == "joint":
                noise = [self._randn(gens, (1, r, r)).requires_grad_(True) for r in self.G.synthesis.noise_resolutions]

            def latent_loss(t: float) -> torch.Tensor:
                w = w_opt
                scale = w_noise_scale_at(t, self.w_std, cfg.w_noise_factor, cfg.w_noise_ramp)
                if scale > 0:
                    w = w + self._randn(gens, w_opt.shape[1:]) * scale
                with self._amp():
                    images = self._synth(self._tile(w), noise).float()
                loss = self._image_loss(images, targets, masks, perceptual, cfg.mse_weight, cfg.perceptual_weight)
                if extra_loss is not None:
                    loss = loss + extra_loss(images, "latent")
                if noise is not None and cfg.noise_regularize:
                    loss = loss + cfg.noise_regularize * noise_regularizer(noise)
                return loss

            params = [w_opt] + (noise or [])
            self._optimise(params, cfg.steps, cfg.lr, latent_loss, noise, log, callback, 0, total)
            ws = self._tile(w_opt.detach())

            if cfg.noise_optimization == "sequential" and cfg.noise_steps > 0:
                noise = [n.requires_grad_(True) for n in _const_noise(self.G, B, cfg.noise_mode)]

                def noise_loss(t: float) -> torch.Tensor:
                    with self._amp():
                        images = self._synth(ws, noise).float()
                    loss = self._image_loss(
                        images, targets, masks, perceptual, cfg.noise_mse_weight, cfg.noise_perceptual_weight
                    )
                    if extra_loss is not None:
                        loss = loss + extra_loss(images, "noise")
                    if cfg.noise_regularize:
                        loss = loss + cfg.noise_regularize * noise_regularizer(noise)
                    return loss

                self._optimise(noise, cfg.noise_steps, cfg.noise_lr, noise_loss, noise, log, callback, cfg.steps, total)

            with torch.no_grad():
                noise = [n.detach() for n in noise] if noise is not None else None
                recon = self._synth(ws, noise)
                # The loss's target features serve the score too where they are its own: one term, no mask, fp32.
                reuse = len(perceptual) == 1 and perceptual[0][0] is None and self._amp_dtype is None
                reuse = reuse and bool((targets.abs() <= 1).all())  # the score reads clamped targets
                scores = score_pairs(
                    targets,
                    recon,
                    D=self.D,
                    perceptual=self.perceptual,
                    lam=cfg.anomaly_lambda,
                    target_features=perceptual[0][1] if reuse and perceptual_terms is None else None,
                )
                if self.encoder is not None:
                    scores["encoder_consistency"] = self.encoder_consistency(recon, ws)

        return ProjectionResult(
            ws=ws.float().cpu(),
            noise=[n.cpu() for n in noise] if noise is not None else None,
            reconstructions=recon.cpu(),
            scores=scores,
            perceptual_backend=cfg.perceptual,
            losses=np.stack(log) if log else np.zeros((0, B), dtype=np.float32),
            steps=len(log),
        )
