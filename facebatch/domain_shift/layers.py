"""Which parts of the trainable generator NADA may change, and adaptive layer selection.

Frozen always: the mapping network, every affine (style) layer and every ToRGB layer, and the
learned constant. Trainable candidates: each synthesis conv layer's weight, bias and noise
strength. W+ row i drives exactly the conv layers that read ws[:, i] (in the NVlabs layout:
b4.conv1 reads row 0, b8.conv0 row 1, b8.conv1 row 2, ...); the last row is read only by the
final ToRGB, which stays frozen, so it is no candidate.

(The reference code maps row i to its rosinality module list ``[conv1, to_rgb1, convs...]``, which
is off by one past row 1 and unfreezes ``to_rgb1`` for row 1; here a row selects the layers that
read it, which is what ranking rows by how much their codes move means.)

Adaptive selection (per training step): replicate W codes of `batch` random z to W+, take `iters`
SGD(lr 0.01) steps on those codes with the global CLIP loss against the target text through the
*trainable* generator, score each row by mean |Δw| and train the top k. The colab's default
k = int(2·(2·log2(res) − 2)/3) = int(2·num_ws/3): 12 of 18 rows at 1024 px, 6 of 10 at 64 px.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from facebatch.errors import InputError


def row_layers(G: nn.Module) -> list[list[nn.Module]]:
    """For each W+ row, the synthesis conv layers (SynthesisLayer) that read it."""
    rows: list[list[nn.Module]] = [[] for _ in range(G.num_ws)]
    w_idx = 0
    for block in G.synthesis.blocks():
        convs = ([block.conv0] if hasattr(block, "conv0") else []) + [block.conv1]
        for k, conv in enumerate(convs):
            rows[w_idx + k].append(conv)
        w_idx += block.num_conv
    return rows


def candidate_rows(G: nn.Module) -> list[int]:
    """W+ rows that drive at least one conv layer (every row but the last-ToRGB-only one)."""
    return [i for i, layers in enumerate(row_layers(G)) if layers]


def layer_parameters(layer: nn.Module) -> list[nn.Parameter]:
    """A conv layer's trainable parameters: all but its affine (style) layer's."""
    affine = {id(p) for p in layer.affine.parameters()}
    return [p for p in layer.parameters() if id(p) not in affine]


def trainable_parameters(G: nn.Module) -> list[nn.Parameter]:
    """Every parameter NADA may ever change, in a fixed order (the optimizer's)."""
    return [p for layers in row_layers(G) for layer in layers for p in layer_parameters(layer)]


def freeze_all_but(G: nn.Module, rows: Sequence[int]) -> None:
    """requires_grad only on the conv layers of `rows` (affines excluded); everything else frozen."""
    G.requires_grad_(False)
    table = row_layers(G)
    for i in rows:
        for layer in table[i]:
            for p in layer_parameters(layer):
                p.requires_grad_(True)


def default_k(num_ws: int) -> int:
    return max(1, int(2 * num_ws / 3))


def check_rows(rows: Sequence[int], G: nn.Module) -> list[int]:
    """Explicit --layers: in range, and each drives a conv layer (the last row feeds only a frozen ToRGB)."""
    rows = sorted(set(int(r) for r in rows))
    allowed = set(candidate_rows(G))
    bad = [r for r in rows if not 0 <= r < G.num_ws]
    if bad:
        raise InputError(f"--layers {bad}: out of range, the generator has W+ rows 0-{G.num_ws - 1}")
    only_rgb = [r for r in rows if r not in allowed]
    if only_rgb:
        raise InputError(
            f"--layers {only_rgb}: W+ row {only_rgb[0]} is read only by the last ToRGB layer, which NADA keeps "
            f"frozen; choose among {min(allowed)}-{max(allowed)}"
        )
    if not rows:
        raise InputError("--layers selects no W+ row")
    return rows


def select_rows(
    G_train: nn.Module,
    w_plus: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    k: int,
    iters: int = 1,
    noise: Callable[[], list[torch.Tensor]] | None = None,
    lr: float = 0.01,
) -> list[int]:
    """Top-k candidate W+ rows by mean |Δw| after `iters` SGD steps on `w_plus` [B, num_ws, w_dim]."""
    w0 = w_plus.detach()
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.SGD([w], lr=lr)
    for _ in range(iters):
        img = G_train.synthesis(w, noise=noise() if noise else None, noise_mode="const")
        loss = loss_fn(img)
        opt.zero_grad(set_to_none=True)
        (grad,) = torch.autograd.grad(loss, [w])
        w.grad = grad
        opt.step()
    score = (w.detach() - w0).abs().mean(dim=-1).mean(dim=0)
    candidates = torch.tensor(candidate_rows(G_train), device=score.device)
    top = torch.topk(score[candidates], min(k, len(candidates))).indices
    return sorted(candidates[top].tolist())
