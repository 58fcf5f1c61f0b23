"""An image -> W+ encoder for one generator: a pSp/e4e-style feature pyramid with one head per W+ row.

Architecture (pixel2style2pixel's GradualStyleEncoder, resized to the generator): the image, resized
to at most 256 px, goes through a residual trunk of torchvision ``BasicBlock`` stages that halve the
resolution down to 4 px; the fine, middle and coarse levels of the resulting pyramid are merged top
down (FPN: each level plus the upsampled coarser one), and row k of W+ is read by its own head
(strided 3x3 convs down to 1x1, then a linear layer) from the level that matches the synthesis layers
the row drives: rows of the 4-8 px layers from the coarse level, 16-32 px from the middle one, the
rest from the fine one. The output is w_avg + an offset per row (e4e), so an untrained encoder
starts at the generator's mean face.

`widths` follows the generator's size: at 64 px (celeba64) 32-64-128-256 channels keep a forward pass
a fraction of G's; for 1024-px generators the trunk reads a 256-px copy, as pSp does. `head_width` is
the pyramid's channel count, which the heads read: their strided convs hold most of the weights (at
64 px with 256 channels, 17.7M of 19.6M parameters), so small generators get 128 (5.5M in all).

Random initialisation: no pretrained backbone can be downloaded here. ``iterative`` adds ReStyle's
second input (the current reconstruction, 6 channels in), for refinement passes.

The file format: one safetensors file whose metadata holds the constructor settings (checked field
by field before anything is built, like generator files), the base generator's sha256, the training
recipe and images seen; loading runs no code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from facebatch import __version__
from facebatch.errors import CheckpointError, InputError
from facebatch.nets.safetensors_meta import META_KEY

FORMAT_NAME = "facebatch-encoder"
FORMAT_VERSION = 1
MAX_INPUT = 256


def default_widths(resolution: int) -> list[int]:
    """Channels of the trunk's stages (one per halving down to 4 px, of the input at <= 256 px)."""
    stages = int(math.log2(min(resolution, MAX_INPUT))) - 2
    base = 32 if resolution <= 128 else 64
    return [min(base * 2**i, 256 if resolution <= 128 else 512) for i in range(stages)]


def default_head_width(resolution: int) -> int:
    """Channels of the pyramid and the per-row heads (pSp: 512 at 1024 px), at most the trunk's last width."""
    return 128 if resolution <= 128 else 512


def row_levels(num_ws: int) -> list[str]:
    """Which pyramid level feeds each W+ row: StyleGAN2 row k drives the layers at 4 * 2**((k+1)//2) px."""
    levels = []
    for k in range(num_ws):
        res = 4 * 2 ** ((k + 1) // 2)
        levels.append("coarse" if res <= 8 else "middle" if res <= 32 else "fine")
    return levels


class _Head(nn.Module):
    """pSp's map2style: strided convs from an h x h map down to 1 x 1, then a linear layer to w_dim."""

    def __init__(self, channels: int, size: int, w_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(max(int(math.log2(size)), 0)):
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        self.convs = nn.Sequential(*layers)
        self.linear = nn.Linear(channels, w_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


class Encoder(nn.Module):
    def __init__(
        self,
        resolution: int,
        num_ws: int,
        w_dim: int,
        widths: list[int] | None = None,
        blocks_per_stage: int = 1,
        iterative: bool = False,
        head_width: int | None = None,
    ):
        super().__init__()
        self.resolution, self.num_ws, self.w_dim, self.iterative = resolution, num_ws, w_dim, iterative
        self.input_size = min(resolution, MAX_INPUT)
        widths = list(widths or default_widths(resolution))
        if len(widths) != int(math.log2(self.input_size)) - 2:
            raise InputError(f"widths needs {int(math.log2(self.input_size)) - 2} stages for {resolution} px")
        self.widths = widths
        self.stem = nn.Sequential(
            nn.Conv2d(6 if iterative else 3, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.LeakyReLU(0.2),
        )
        stages, cin = [], widths[0]
        for cout in widths:
            down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))
            blocks = [BasicBlock(cin, cout, stride=2, downsample=down)]
            blocks += [BasicBlock(cout, cout) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        # Pyramid levels: the last three stages' outputs (8x8 and finer for the fine / middle ones).
        n = len(widths)
        self.level_stage = {"coarse": n - 1, "middle": max(n - 2, 0), "fine": max(n - 3, 0)}
        width = self.head_width = int(head_width or min(widths[-1], default_head_width(resolution)))
        self.lateral = nn.ModuleDict({lvl: nn.Conv2d(widths[i], width, 1) for lvl, i in self.level_stage.items()})
        size = {lvl: self.input_size // 2 ** (i + 1) for lvl, i in self.level_stage.items()}
        self.levels = row_levels(num_ws)
        self.heads = nn.ModuleList([_Head(width, size[lvl], w_dim) for lvl in self.levels])
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def config(self) -> dict:
        return {
            "resolution": self.resolution,
            "num_ws": self.num_ws,
            "w_dim": self.w_dim,
            "widths": list(self.widths),
            "blocks_per_stage": len(self.stages[0]),
            "iterative": self.iterative,
            "head_width": self.head_width,
        }

    def forward(self, images: torch.Tensor, current: torch.Tensor | None = None) -> torch.Tensor:
        """[B, 3, R, R] in [-1, 1] (and, iterative, the current reconstruction) -> W+ codes [B, num_ws, w_dim]."""
        x = images if not self.iterative else torch.cat([images, current if current is not None else images], 1)
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="area")
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        coarse = self.lateral["coarse"](feats[self.level_stage["coarse"]])
        middle = self.lateral["middle"](feats[self.level_stage["middle"]]) + F.interpolate(
            coarse, size=feats[self.level_stage["middle"]].shape[-2:], mode="nearest"
        )
        fine = self.lateral["fine"](feats[self.level_stage["fine"]]) + F.interpolate(
            middle, size=feats[self.level_stage["fine"]].shape[-2:], mode="nearest"
        )
        pyramid = {"coarse": coarse, "middle": middle, "fine": fine}
        offsets = torch.stack([head(pyramid[lvl]) for head, lvl in zip(self.heads, self.levels)], dim=1)
        return self.w_avg.to(offsets.dtype) + offsets


def build_encoder(G, **kwargs) -> Encoder:
    """An encoder sized for generator `G`, starting at G's mean face."""
    enc = Encoder(G.img_resolution, G.num_ws, G.w_dim, **kwargs)
    with torch.no_grad():
        enc.w_avg.copy_(G.mapping.w_avg.detach().to(enc.w_avg.device))
    return enc


# -- file format ------------------------------------------------------------------------------------


@dataclass
class EncoderFile:
    encoder: Encoder
    generator_sha256: str
    images_seen: int
    recipe: dict = field(default_factory=dict)
    path: Path | None = None
    sha256: str | None = None
    source: str | None = None  # the object-store URL it was fetched from, else None

    @property
    def location(self) -> str:
        """What a worker loads it from (see Networks.location)."""
        return self.source or str(Path(self.path).resolve())


def write_encoder(
    path: Path, enc: Encoder, generator_sha256: str, images_seen: int, recipe: dict, *, half: bool = False
) -> Path:
    """`half` stores the floating-point weights as float16 (half the file); they are read back as float32."""
    from safetensors.torch import save_file

    from facebatch.pipeline.atomic import atomic_output

    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "facebatch_version": __version__,
        "encoder_kwargs": enc.config(),
        "generator_sha256": generator_sha256,
        "images_seen": int(images_seen),
        "recipe": recipe,
        "weights_dtype": "float16" if half else "float32",
    }
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in enc.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    path = Path(path)
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(config, sort_keys=True, default=str)})
    return path


def read_encoder(path: Path, device="cpu") -> EncoderFile:
    """An encoder file as data: its settings are checked field by field and its tensors shape by shape first."""
    from facebatch.nets.arch_check import check_kwargs, check_shapes
    from facebatch.nets.cache import sha256_of
    from facebatch.nets.safetensors_meta import read_file
    from facebatch.pipeline import storage

    source = str(path) if storage.is_url(path) else None
    if source is not None:  # an object store: this host's cached copy
        from facebatch.nets.cache import fetch_object
        from facebatch.nets.registry import url_cache_path

        path = fetch_object(source, url_cache_path(source))
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no encoder file at {path}")
    config, tensors = read_file(path, "encoder")
    if config is None or config.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a facebatch encoder (its metadata names no {FORMAT_NAME} config)")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: encoder format v{config.get('format_version')} is newer than this facebatch")
    kwargs = config.get("encoder_kwargs")
    check_kwargs("encoder", kwargs)
    check_shapes("encoder", Encoder, kwargs, tensors)
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: the encoder weights hold NaN or infinite values ({bad[0]})")
    enc = Encoder(**kwargs)
    enc.load_state_dict(tensors, strict=True)
    sha = config.get("generator_sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise CheckpointError(f"{path}: the encoder names no base generator (generator_sha256)")
    return EncoderFile(
        enc.eval().requires_grad_(False).to(device),
        sha,
        int(config.get("images_seen", 0)),
        config.get("recipe") or {},
        path,
        sha256_of(path),
        source,
    )


def check_encoder_fits(encoder: EncoderFile, generator_sha256: str, G) -> None:
    """One line when an encoder was trained for another generator (or does not fit this one's shape)."""
    if encoder.generator_sha256 != generator_sha256:
        raise InputError(
            f"encoder {encoder.path} was trained for the generator with sha256 {encoder.generator_sha256[:12]}..., "
            f"not this one ({generator_sha256[:12]}...): train one with `facebatch encoder train -g GENERATOR`"
        )
    enc = encoder.encoder
    if (enc.resolution, enc.num_ws, enc.w_dim) != (G.img_resolution, G.num_ws, G.w_dim):
        raise InputError(f"encoder {encoder.path} does not fit this generator's shape")
