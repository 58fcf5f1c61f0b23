"""rosinality stylegan2-pytorch checkpoints -> official NVlabs names and constructor kwargs.

The layout (`g_ema`, optional `d`, `latent_avg`) is what e4e, PTI, StyleGAN-NADA and most converted
models ship. The architecture is not stored in those files, so every width and depth is read from
tensor shapes (exports with non-standard widths exist), never from rosinality's channel table.
"""

from __future__ import annotations

import re

import torch

from facebatch.errors import CheckpointError
from facebatch.nets.stylegan2 import Discriminator, Generator


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def _fill_filters(model_cls, kwargs: dict, sd: dict) -> dict:
    """rosinality keeps its blur kernels under other names and scales; take the official ones."""
    fresh = model_cls(**kwargs).state_dict()
    for name, value in fresh.items():
        if name.endswith("resample_filter"):
            sd[name] = value
    return sd


def generator_from_rosinality(g: dict, latent_avg: torch.Tensor | None) -> tuple[dict, dict]:
    n_mlp = _count(g, r"style\.(\d+)\.weight")
    n_convs = _count(g, r"convs\.(\d+)\.conv\.weight")
    if n_mlp == 0 or "input.input" not in g:
        raise CheckpointError("not a rosinality generator state dict (no style.N / input.input)")
    resolution = 4 * 2 ** (n_convs // 2)
    w_dim = g["style.1.weight"].shape[0]
    z_dim = g["style.1.weight"].shape[1]
    channels = {4: g["input.input"].shape[1]}
    for level in range(n_convs // 2):
        channels[8 * 2**level] = g[f"convs.{2 * level}.conv.weight"].shape[1]
    kwargs = dict(
        z_dim=z_dim,
        c_dim=0,
        w_dim=w_dim,
        img_resolution=resolution,
        img_channels=3,
        mapping_kwargs=dict(num_layers=n_mlp),
        synthesis_kwargs=dict(channels=channels, conv_clamp=None),
    )

    sd: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        sd[f"mapping.fc{i}.weight"] = g[f"style.{i + 1}.weight"]
        sd[f"mapping.fc{i}.bias"] = g[f"style.{i + 1}.bias"]
    sd["mapping.w_avg"] = (latent_avg.reshape(-1) if latent_avg is not None else torch.zeros(w_dim)).float()
    sd["synthesis.b4.const"] = g["input.input"][0]

    def styled(src: str, dst: str, noise_idx: int) -> None:
        sd[f"{dst}.weight"] = g[f"{src}.conv.weight"][0]
        sd[f"{dst}.affine.weight"] = g[f"{src}.conv.modulation.weight"]
        sd[f"{dst}.affine.bias"] = g[f"{src}.conv.modulation.bias"]
        sd[f"{dst}.noise_strength"] = g[f"{src}.noise.weight"].reshape([])
        sd[f"{dst}.bias"] = g[f"{src}.activate.bias"]
        noise = g.get(f"noises.noise_{noise_idx}")
        res = int(dst.split(".")[1][1:])
        sd[f"{dst}.noise_const"] = noise.reshape(res, res) if noise is not None else torch.randn(res, res)

    def to_rgb(src: str, dst: str) -> None:
        sd[f"{dst}.weight"] = g[f"{src}.conv.weight"][0]
        sd[f"{dst}.affine.weight"] = g[f"{src}.conv.modulation.weight"]
        sd[f"{dst}.affine.bias"] = g[f"{src}.conv.modulation.bias"]
        sd[f"{dst}.bias"] = g[f"{src}.bias"].reshape(-1)

    styled("conv1", "synthesis.b4.conv1", 0)
    to_rgb("to_rgb1", "synthesis.b4.torgb")
    for level in range(n_convs // 2):
        res = 8 * 2**level
        styled(f"convs.{2 * level}", f"synthesis.b{res}.conv0", 2 * level + 1)
        styled(f"convs.{2 * level + 1}", f"synthesis.b{res}.conv1", 2 * level + 2)
        to_rgb(f"to_rgbs.{level}", f"synthesis.b{res}.torgb")
    return kwargs, _fill_filters(Generator, kwargs, sd)


def discriminator_from_rosinality(d: dict) -> tuple[dict, dict]:
    n_blocks = _count(d, r"convs\.(\d+)\.conv1\.0\.weight")
    if "convs.0.0.weight" not in d or n_blocks == 0:
        raise CheckpointError("not a rosinality discriminator state dict (no convs.0.0 / convs.N.conv1)")
    resolution = 4 * 2**n_blocks
    channels = {resolution: d["convs.0.0.weight"].shape[0]}
    for j in range(1, n_blocks + 1):
        channels[resolution // 2**j] = d[f"convs.{j}.conv2.1.weight"].shape[0]
    group = 4
    kwargs = dict(
        c_dim=0,
        img_resolution=resolution,
        img_channels=3,
        architecture="resnet",
        conv_clamp=None,
        channels=channels,
        epilogue_kwargs=dict(mbstd_group_size=group, mbstd_num_channels=1),
    )

    sd = {
        f"b{resolution}.fromrgb.weight": d["convs.0.0.weight"],
        f"b{resolution}.fromrgb.bias": d["convs.0.1.bias"],
        "b4.conv.weight": d["final_conv.0.weight"],
        "b4.conv.bias": d["final_conv.1.bias"],
        "b4.fc.weight": d["final_linear.0.weight"],
        "b4.fc.bias": d["final_linear.0.bias"],
        "b4.out.weight": d["final_linear.1.weight"],
        "b4.out.bias": d["final_linear.1.bias"],
    }
    for j in range(1, n_blocks + 1):
        res = resolution // 2 ** (j - 1)
        sd[f"b{res}.conv0.weight"] = d[f"convs.{j}.conv1.0.weight"]
        sd[f"b{res}.conv0.bias"] = d[f"convs.{j}.conv1.1.bias"]
        sd[f"b{res}.conv1.weight"] = d[f"convs.{j}.conv2.1.weight"]
        sd[f"b{res}.conv1.bias"] = d[f"convs.{j}.conv2.2.bias"]
        sd[f"b{res}.skip.weight"] = d[f"convs.{j}.skip.1.weight"]
    return kwargs, _fill_filters(Discriminator, kwargs, sd)


def convert_rosinality(ckpt: dict) -> tuple[dict, dict, dict | None, dict | None]:
    """(G_kwargs, G_state_dict, D_kwargs | None, D_state_dict | None) from a loaded rosinality dict."""
    if "g_ema" not in ckpt:
        raise CheckpointError("rosinality checkpoint without 'g_ema'")
    try:
        g_kwargs, g_sd = generator_from_rosinality(ckpt["g_ema"], ckpt.get("latent_avg"))
        d_kwargs = d_sd = None
        if ckpt.get("d") is not None:
            d_kwargs, d_sd = discriminator_from_rosinality(ckpt["d"])
    except KeyError as exc:
        raise CheckpointError(f"rosinality checkpoint is missing tensor {exc.args[0]!r}") from None
    return g_kwargs, g_sd, d_kwargs, d_sd
