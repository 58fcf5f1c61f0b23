"""The shift-tolerant VGG16 trunk of ST-LPIPS, defined here so its weight file can be read as plain tensors.

The stlpips-pytorch wheel ships the whole network (trunk, blur filters and linear heads) in
``weights/vST0.0/vgg_shift_tolerant.pth``, but its own code imports packages it does not declare
(IPython, torchsummary). So this module rebuilds the architecture with the same layer indices,
which makes the file's state-dict keys (``net.slice2.5.filt``, ``net.slice2.6.weight``, ...) load
strictly. Architecture (Ghildyal & Liu, ECCV'22, "antialiased, blur after, reflect pad 2"):
VGG16 convolutions, and every 2x2 max-pool replaced by max-pool(2, stride 1) followed by a
3x3 binomial blur with stride 2 on a reflect-padded input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# VGG16 configuration "D": conv widths, "M" = downsampling step.
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# Layer index ranges of the five feature taps (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
_SLICES = [(0, 4), (4, 10), (10, 18), (18, 26), (26, 34)]


class BlurDownsample(nn.Module):
    """Anti-aliased stride-2 subsampling: reflect pad 2, depthwise 3x3 binomial filter (from the file)."""

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        filt = taps[:, None] * taps[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class ShiftTolerantVGG16(nn.Module):
    """Returns the five ReLU feature maps LPIPS compares."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in _VGG16:
            if v == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=1), BlurDownsample(in_ch)]
            else:
                layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU()]
                in_ch = v
        for i, (lo, hi) in enumerate(_SLICES, start=1):
            seq = nn.Sequential()
            for idx in range(lo, hi):
                seq.add_module(str(idx), layers[idx])
            setattr(self, f"slice{i}", seq)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i in range(1, len(_SLICES) + 1):
            x = getattr(self, f"slice{i}")(x)
            feats.append(x)
        return feats
