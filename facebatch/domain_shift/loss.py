"""StyleGAN-NADA's CLIP losses, over one or more CLIP models with weights.

The directional loss compares two directions in CLIP space:

- the text direction ΔT: each template filled with the text, each embedding normalised, the
  differences target − source averaged over templates, the mean normalised;
- the image direction ΔI = normalise(E_I(G_train(w)) − E_I(G_frozen(w))) per sample;

and is ``mean_batch(1 − cos(ΔI, ΔT))``. When every ΔI of a batch is exactly zero (the first step
of a generator without noise inputs) the trained images are re-encoded with +1e-6, as the
reference code does, so the direction is defined. The global loss (used only to rank W+ layers) is
CLIP's logit of the image against the literal target text, divided by 100 as the reference
code does (for OpenAI's CLIPs, whose logit scale is 100, it is 1 − cos).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from facebatch.nets.clip import Clip


def text_direction(clip: Clip, source: str, target: str) -> torch.Tensor:
    """Unit ΔT [D]: the mean over the model's templates of normalised(target) − normalised(source)."""
    fill = lambda text: [t.format(text) if "{}" in t else t for t in clip.templates] or [text]  # noqa: E731
    diff = (clip.encode_texts(fill(target)) - clip.encode_texts(fill(source))).mean(dim=0)
    return F.normalize(diff, dim=-1)


def directional_loss(clip: Clip, direction: torch.Tensor, frozen: torch.Tensor, trained: torch.Tensor) -> torch.Tensor:
    """mean_batch(1 − cos(ΔI, ΔT)) for one CLIP; `frozen` carries no gradient, `trained` does."""
    src = clip.encode_images(frozen)
    dst = clip.encode_images(trained)
    delta = dst - src
    if delta.sum() == 0:
        delta = clip.encode_images(trained + 1e-6) - src
    delta = delta / delta.norm(dim=-1, keepdim=True)
    return (1.0 - delta @ direction.to(delta.device)).mean()


def global_loss(clip: Clip, target_embedding: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """mean(1 − logit(image, target text) / 100), CLIP's logit = exp(logit_scale) · cos."""
    scale = clip.model.logit_scale.exp().detach() if hasattr(clip.model, "logit_scale") else 100.0
    cos = clip.encode_images(images) @ target_embedding.to(images.device)
    return (1.0 - scale * cos / 100.0).mean()


@dataclass
class ClipLoss:
    """The losses of one NADA run: per CLIP model its weight, ΔT and the literal target text embedding."""

    clips: Sequence[Clip]
    weights: Sequence[float]
    directions: Sequence[torch.Tensor]
    targets: Sequence[torch.Tensor]

    @classmethod
    def build(cls, clips: Sequence[Clip], weights: Sequence[float], source: str, target: str) -> "ClipLoss":
        if len(clips) != len(weights) or not clips:
            raise ValueError("one weight per CLIP model")
        return cls(
            list(clips),
            [float(w) for w in weights],
            [text_direction(c, source, target) for c in clips],
            [c.encode_texts([target])[0] for c in clips],
        )

    def directional(self, frozen: torch.Tensor, trained: torch.Tensor) -> torch.Tensor:
        """Σ_models weight · directional loss: what the trainable generator minimises."""
        terms = [
            w * directional_loss(c, d, frozen, trained)
            for c, w, d in zip(self.clips, self.weights, self.directions)
            if w
        ]
        return torch.stack(terms).sum() if terms else trained.new_zeros(())

    def global_(self, images: torch.Tensor) -> torch.Tensor:
        """Σ_models weight · global loss: what adaptive layer selection's W+ steps minimise."""
        terms = [w * global_loss(c, t, images) for c, w, t in zip(self.clips, self.weights, self.targets) if w]
        return torch.stack(terms).sum() if terms else images.new_zeros(())
