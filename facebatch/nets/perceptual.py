"""Perceptual distances of the LPIPS family, chosen by name, one value per image.

Backends:
- ``stlpips-vgg``: shift-tolerant LPIPS (VGG16). Its weight file in the stlpips-pytorch wheel
  holds the trunk *and* the linear heads, so it works offline; it is read as plain tensors
  into :class:`facebatch.nets.vgg.ShiftTolerantVGG16`.
- ``lpips-vgg`` / ``lpips-alex``: the ``lpips`` package's heads on torchvision's ImageNet trunks.
  The trunk file must already be in torch hub's cache; it is never downloaded here, and it is
  read with ``weights_only=True`` (torchvision's own loader would unpickle it).
- ``none``: no perceptual term.

Images larger than 256 px are area-downsampled to 256 first, as the NVlabs projector does.
Features are split from the distance so a projector computes its targets' features once.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from facebatch.errors import CheckpointError, InputError, ModelNotAvailable
from facebatch.nets.vgg import ShiftTolerantVGG16

BACKENDS = ("stlpips-vgg", "lpips-vgg", "lpips-alex", "none")
DEFAULT_BACKEND = "stlpips-vgg"
MAX_RESOLUTION = 256

_STLPIPS_VGG_FILE = "weights/vST0.0/vgg_shift_tolerant.pth"


def _unit_normalize(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return feat / (feat.square().sum(dim=1, keepdim=True).sqrt() + eps)


class LpipsDistance(nn.Module):
    """LPIPS: unit-normalised trunk features, squared difference, 1x1 linear head, spatial mean, sum."""

    def __init__(self, name: str, trunk: nn.Module, lin_weights: list[torch.Tensor], shift, scale):
        super().__init__()
        self.name = name
        self.trunk = trunk
        for k, w in enumerate(lin_weights):
            self.register_buffer(f"lin{k}", w.detach().clone().float())
        self.register_buffer("shift", torch.as_tensor(shift).float().reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.as_tensor(scale).float().reshape(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def raw_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's five ReLU maps before LPIPS' unit normalisation (what a Gram-matrix style loss reads)."""
        if images.shape[-1] > MAX_RESOLUTION or images.shape[-2] > MAX_RESOLUTION:
            images = F.interpolate(images, size=(MAX_RESOLUTION, MAX_RESOLUTION), mode="area")
        return list(self.trunk((images - self.shift) / self.scale))

    def features(self, images: torch.Tensor, autocast_dtype: torch.dtype | None = None) -> list[torch.Tensor]:
        """Features of images in [-1, 1], NCHW; differentiable w.r.t. the images.

        ``autocast_dtype`` (e.g. torch.bfloat16) runs the trunk under autocast; the maps come back as
        float32 before the unit normalisation, so the distance itself is computed in fp32.
        """
        if autocast_dtype is None:
            raw = self.raw_features(images)
        else:
            with torch.autocast(images.device.type, dtype=autocast_dtype):
                raw = self.raw_features(images)
            raw = [f.float() for f in raw]
        return [_unit_normalize(f) for f in raw]

    def distance_features(self, feats_a: list[torch.Tensor], feats_b: list[torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for k, (fa, fb) in enumerate(zip(feats_a, feats_b)):
            total = total + F.conv2d((fa - fb).square(), getattr(self, f"lin{k}")).mean(dim=(1, 2, 3))
        return total

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance per image, shape [N]."""
        return self.distance_features(self.features(a), self.features(b))


def _package_dir(module: str) -> Path | None:
    # find_spec locates the package without running its __init__ (stlpips_pytorch's imports fail).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def stlpips_weights_path() -> Path:
    root = _package_dir("stlpips_pytorch")
    path = (root / _STLPIPS_VGG_FILE) if root else None
    if path is None or not path.is_file():
        raise ModelNotAvailable(
            f"stlpips-vgg needs the weight file {_STLPIPS_VGG_FILE} of the stlpips-pytorch wheel; "
            "install it with `pip install stlpips-pytorch==0.0.2` (or choose another perceptual backend)"
        )
    return path


def _build_stlpips_vgg() -> LpipsDistance:
    state = torch.load(stlpips_weights_path(), map_location="cpu", weights_only=True)
    trunk = ShiftTolerantVGG16()
    trunk.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}, strict=True)
    lins = [state[f"lin{k}.model.1.weight"] for k in range(5)]
    return LpipsDistance("stlpips-vgg", trunk, lins, state["scaling_layer.shift"], state["scaling_layer.scale"])


def stand_in_stlpips_vgg(seed: int = 0) -> LpipsDistance:
    """stlpips-vgg's exact architecture with seeded random weights: the same FLOPs and the same code path.

    For timing and device comparisons on machines the 56-MiB weight file cannot reach (a lent GPU
    machine gets the repository and little else); never a distance to trust.
    """
    gen = torch.Generator().manual_seed(seed)
    trunk = ShiftTolerantVGG16()
    with torch.no_grad():
        for p in trunk.parameters():
            if p.ndim > 1:  # He initialisation keeps the five feature maps at sane magnitudes
                p.copy_(torch.randn(p.shape, generator=gen) * (2 / p[0].numel()) ** 0.5)
            else:
                p.zero_()
    lins = [torch.rand(1, c, 1, 1, generator=gen) for c in (64, 128, 256, 512, 512)]
    return LpipsDistance("stlpips-vgg", trunk, lins, torch.zeros(3), torch.ones(3) * 0.5)


def torchvision_trunk_file(net: str) -> tuple[Path, str]:
    """Where torch hub keeps the ImageNet trunk for ``net`` ('vgg' or 'alex'), and its official URL."""
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    url = {"vgg": VGG16_Weights.IMAGENET1K_V1.url, "alex": AlexNet_Weights.IMAGENET1K_V1.url}[net]
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name, url


def _build_lpips(net: str) -> LpipsDistance:
    name = f"lpips-{net}"
    path, url = torchvision_trunk_file(net)
    if not path.is_file():
        raise ModelNotAvailable(
            f"{name} needs torchvision's ImageNet weights {path.name}, which are not at {path}: "
            f"download {url} into {path.parent} (or set TORCH_HOME), or use perceptual backend stlpips-vgg, "
            "which works offline"
        )
    import lpips

    with warnings.catch_warnings():
        # pnet_rand builds the trunk without weights (no download); torchvision warns about the old kwarg.
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    # lpips keeps torchvision's layer indices inside its slices: slice2.5.weight <- features.5.weight
    trunk_state = {}
    for key in model.net.state_dict():
        src = "features." + key.split(".", 1)[1]
        if src not in state:
            raise CheckpointError(f"{path} is not a torchvision {net} state dict (no {src})")
        trunk_state[key] = state[src]
    model.net.load_state_dict(trunk_state, strict=True)
    lins = [lin.model[-1].weight for lin in model.lins]
    return LpipsDistance(name, model.net, lins, model.scaling_layer.shift, model.scaling_layer.scale)


@functools.lru_cache(maxsize=8)
def _cached(name: str, device: str) -> LpipsDistance:
    if name == "stlpips-vgg":
        dist = _build_stlpips_vgg()
    else:
        dist = _build_lpips(name.split("-", 1)[1])
    return dist.to(device)


def build_perceptual(name: str, device: str | torch.device = "cpu") -> LpipsDistance | None:
    """The frozen distance for ``name`` (built once per device), or None for ``none``."""
    if name not in BACKENDS:
        raise InputError(f"unknown perceptual backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    if name == "none":
        return None
    return _cached(name, str(torch.device(device)))
