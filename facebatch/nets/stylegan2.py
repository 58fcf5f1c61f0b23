"""StyleGAN2 generator and discriminator with the official NVlabs parameter and buffer names.

One readable file of small modules. The constructors take an official `init_kwargs` as stored in
an NVlabs pickle, so `load_state_dict(official, strict=True)` works. Two additions serve batched
projection: `noise=` passes per-sample noise maps (the official buffers are shared by the batch),
and `Discriminator.features` returns the activations before minibatch-std (which mixes samples).
Only the fp32 path exists: fp16 layers of official configs run in fp32, which changes nothing but
speed. `channels` may override the channel_base/channel_max table (rosinality exports with
arbitrary widths need it). Over 400 lines as NVlabs' networks.py is: the modules nest, and keeping them
in one file keeps the official names one search away.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from facebatch.nets.ops import (
    bias_act,
    conv2d_resample,
    downsample2d,
    modulated_conv2d,
    setup_filter,
    upsample2d,
)

# Keyword arguments of the official constructors that only choose a speed path.
_PERF_ONLY = {
    "num_fp16_res",
    "use_fp16",
    "fp16_channels_last",
    "channels_last",
    "fused_modconv_default",
    "conv_clamp_fp16",
}


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def channel_table(
    resolutions: Sequence[int], channel_base: int, channel_max: int, channels: dict | None
) -> dict[int, int]:
    if channels:
        return {int(r): int(c) for r, c in channels.items()}
    return {r: min(channel_base // r, channel_max) for r in resolutions}


class FullyConnectedLayer(nn.Module):
    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class MappingNetwork(nn.Module):
    """z -> w through an MLP with a 100x lower learning rate; keeps w_avg for truncation."""

    def __init__(
        self,
        z_dim,
        c_dim,
        w_dim,
        num_ws,
        num_layers=8,
        embed_features=None,
        layer_features=None,
        activation="lrelu",
        lr_multiplier=0.01,
        w_avg_beta=0.995,
    ):
        super().__init__()
        if c_dim:
            raise ValueError("conditional generators (c_dim > 0) are not supported")
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim] + [layer_features] * (num_layers - 1) + [w_dim]
        for idx in range(num_layers):
            setattr(
                self,
                f"fc{idx}",
                FullyConnectedLayer(
                    features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
                ),
            )
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        x = normalize_2nd_moment(z.to(torch.float32))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (+2x upsample) + noise + bias + lrelu."""

    def __init__(
        self,
        in_channels,
        out_channels,
        w_dim,
        resolution,
        kernel_size=3,
        up=1,
        use_noise=True,
        activation="lrelu",
        resample_filter=(1, 3, 3, 1),
        conv_clamp=None,
    ):
        super().__init__()
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = math.sqrt(2.0) if activation == "lrelu" else 1.0
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode="const", noise=None):
        styles = self.affine(w)
        injected = None
        if self.use_noise:
            if noise is not None:
                injected = noise * self.noise_strength
            elif noise_mode == "random":
                injected = (
                    torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
                    * self.noise_strength
                )
            elif noise_mode == "const":
                injected = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=injected,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=(self.up == 1),
        )
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain, clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x, w):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const or 2x-up conv0) + conv1 + toRGB, 'skip' architecture."""

    def __init__(
        self,
        in_channels,
        out_channels,
        w_dim,
        resolution,
        img_channels,
        is_last,
        architecture="skip",
        resample_filter=(1, 3, 3, 1),
        conv_clamp=None,
        **layer_kwargs,
    ):
        super().__init__()
        if architecture != "skip":
            raise ValueError(f"generator architecture {architecture!r} is not supported (official configs use 'skip')")
        layer_kwargs = {k: v for k, v in layer_kwargs.items() if k not in _PERF_ONLY}
        self.in_channels, self.resolution = in_channels, resolution
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim,
                resolution,
                up=2,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp, **layer_kwargs
        )
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_torgb = 1

    def noise_layers(self) -> list[SynthesisLayer]:
        layers = [self.conv1] if self.in_channels == 0 else [self.conv0, self.conv1]
        return [layer for layer in layers if layer.use_noise]

    def forward(self, x, img, ws, noise_mode="const", noise=()):
        w_iter = iter(ws.unbind(dim=1))
        noise_iter = iter(noise)
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            x = self.conv0(x, next(w_iter), noise_mode, next(noise_iter, None) if self.conv0.use_noise else None)
        x = self.conv1(x, next(w_iter), noise_mode, next(noise_iter, None) if self.conv1.use_noise else None)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter))
        img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(
        self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, channels=None, **block_kwargs
    ):
        super().__init__()
        log2 = int(np.log2(img_resolution))
        if img_resolution < 4 or 2**log2 != img_resolution:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        block_kwargs = {k: v for k, v in block_kwargs.items() if k not in _PERF_ONLY}
        ch = channel_table(self.block_resolutions, channel_base, channel_max, channels)
        self.channels = ch
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = ch[res // 2] if res > 4 else 0
            is_last = res == img_resolution
            block = SynthesisBlock(in_channels, ch[res], w_dim, res, img_channels, is_last, **block_kwargs)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    @property
    def noise_resolutions(self) -> list[int]:
        """Resolution of each per-layer noise map, in the order `noise=` expects."""
        return [layer.resolution for block in self.blocks() for layer in block.noise_layers()]

    def forward(self, ws, noise_mode="const", noise=None):
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        ws = ws.to(torch.float32)
        noise = list(noise) if noise is not None else None
        x = img = None
        w_idx = noise_idx = 0
        for block in self.blocks():
            n_noise = len(block.noise_layers())
            block_noise = noise[noise_idx : noise_idx + n_noise] if noise is not None else ()
            noise_idx += n_noise
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), noise_mode, block_noise)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    def __init__(
        self,
        z_dim,
        c_dim,
        w_dim,
        img_resolution,
        img_channels,
        mapping_kwargs=None,
        synthesis_kwargs=None,
        **extra_synthesis_kwargs,
    ):
        super().__init__()
        # stylegan2-ada-pytorch stores synthesis_kwargs nested; the stylegan3 repo passes them flat.
        synthesis_kwargs = {**(synthesis_kwargs or {}), **extra_synthesis_kwargs}
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **(mapping_kwargs or {})
        )

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, noise_mode="const", noise=None):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, noise=noise)


class Conv2dLayer(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        bias=True,
        activation="linear",
        up=1,
        down=1,
        resample_filter=(1, 3, 3, 1),
        conv_clamp=None,
        **_perf,
    ):
        super().__init__()
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = math.sqrt(2.0) if activation == "lrelu" else 1.0
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x, gain=1.0):
        x = conv2d_resample(
            x,
            self.weight * self.weight_gain,
            f=self.resample_filter,
            up=self.up,
            down=self.down,
            padding=self.padding,
            flip_weight=(self.up == 1),
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class DiscriminatorBlock(nn.Module):
    def __init__(
        self,
        in_channels,
        tmp_channels,
        out_channels,
        resolution,
        img_channels,
        architecture="resnet",
        activation="lrelu",
        resample_filter=(1, 3, 3, 1),
        conv_clamp=None,
        **_perf,
    ):
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"unknown discriminator architecture {architecture!r}")
        self.in_channels, self.architecture = in_channels, architecture
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        kw = dict(activation=activation, resample_filter=resample_filter, conv_clamp=conv_clamp)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, **kw)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, **kw)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, down=2, **kw)
        if architecture == "resnet":
            self.skip = Conv2dLayer(
                tmp_channels, out_channels, kernel_size=1, bias=False, down=2, resample_filter=resample_filter
            )

    def forward(self, x, img):
        if self.in_channels == 0 or self.architecture == "skip":
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img


class MinibatchStdLayer(nn.Module):
    """Appends the std over groups of samples: the one place where D couples a batch."""

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    def __init__(
        self,
        in_channels,
        cmap_dim,
        resolution,
        img_channels,
        architecture="resnet",
        mbstd_group_size=4,
        mbstd_num_channels=1,
        activation="lrelu",
        conv_clamp=None,
    ):
        super().__init__()
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if not cmap_dim else cmap_dim)

    def pre_mbstd(self, x, img):
        return x + self.fromrgb(img) if self.architecture == "skip" else x

    def forward(self, x, img):
        x = self.pre_mbstd(x, img)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        return self.out(x)


class Discriminator(nn.Module):
    def __init__(
        self,
        c_dim,
        img_resolution,
        img_channels,
        architecture="resnet",
        channel_base=32768,
        channel_max=512,
        num_fp16_res=0,
        conv_clamp=None,
        cmap_dim=None,
        block_kwargs=None,
        mapping_kwargs=None,
        epilogue_kwargs=None,
        channels=None,
    ):
        super().__init__()
        if c_dim:
            raise ValueError("conditional discriminators (c_dim > 0) are not supported")
        self.img_resolution, self.img_channels = img_resolution, img_channels
        log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        ch = channel_table(self.block_resolutions + [4], channel_base, channel_max, channels)
        self.channels = ch
        block_kwargs = {k: v for k, v in (block_kwargs or {}).items() if k not in _PERF_ONLY | {"freeze_layers"}}
        for res in self.block_resolutions:
            in_channels = ch[res] if res < img_resolution else 0
            block = DiscriminatorBlock(
                in_channels,
                ch[res],
                ch[res // 2],
                res,
                img_channels,
                architecture=architecture,
                conv_clamp=conv_clamp,
                **block_kwargs,
            )
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(
            ch[4],
            cmap_dim=0,
            resolution=4,
            img_channels=img_channels,
            architecture=architecture,
            conv_clamp=conv_clamp,
            **(epilogue_kwargs or {}),
        )

    def _blocks(self, img):
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img)
        return x, img

    def features(self, img) -> torch.Tensor:
        """[N, C, 4, 4] activations before minibatch-std: per-image, whatever else is in the batch."""
        x, img = self._blocks(img)
        return self.b4.pre_mbstd(x, img)

    def forward(self, img, c=None):
        x, img = self._blocks(img)
        return self.b4(x, img)
