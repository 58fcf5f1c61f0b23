"""A small CelebA 40-attribute predictor: images in [-1, 1] at any resolution -> probabilities [N, 40].

Used to label generated samples (InterFaceGAN boundaries without human labels) and as a
differentiable guidance loss. Trained at 64 px on the CelebA train split by
models/celeba-attrs/train.py; its card (models/celeba-attrs/README.md) has the recipe and numbers.

The file format follows native_format: one .safetensors file whose header metadata holds one JSON
config (architecture name and kwargs, attribute names, input resolution, training facts). The
config only selects among the architectures defined here, with validated kwargs; nothing in the
file is ever executed or unpickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from facebatch import __version__
from facebatch.errors import CheckpointError
from facebatch.nets.arch_check import check_finite
from facebatch.nets.cache import atomic_output
from facebatch.nets.safetensors_meta import META_KEY, metadata_keys, read_file

FORMAT_NAME = "facebatch-attributes"
FORMAT_VERSION = 1
MAX_ATTRIBUTES = 256
RESOLUTION_BOUNDS = (16, 512)

# The 40 CelebA attributes in the order of list_attr_celeba.txt (and ../shared's attributes.csv).
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)


# ---------------------------------------------------------------------------------------------------------------
# Architectures: name -> (kwargs schema, builder(num_outputs, **kwargs)). The schema bounds every value, so a
# crafted config cannot ask for a giant network or an unknown constructor argument.


def _int_list(value: Any, min_len: int, max_len: int, lo: int, hi: int) -> bool:
    return (
        isinstance(value, list)
        and min_len <= len(value) <= max_len
        and all(type(v) is int and lo <= v <= hi for v in value)
    )


def _build_convnet(num_outputs: int, widths: list[int], dropout: float = 0.0) -> nn.Module:
    """Plain VGG-style net: a stride-2 stem, then per width one (strided) conv + one conv, BN + ReLU, GAP, linear."""

    def unit(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    layers = unit(3, widths[0], 2)
    prev = widths[0]
    for i, width in enumerate(widths):
        layers += unit(prev, width, 1 if i == 0 else 2) + unit(width, width, 1)
        prev = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(prev, num_outputs)]
    return nn.Sequential(*layers)


def _build_resnet(num_outputs: int, layers: list[int]) -> nn.Module:
    """torchvision's ResNet with BasicBlocks and its own stem (7x7/2 conv + max-pool: 16x16 maps at 64 px)."""
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, layers, num_classes=num_outputs)


def _build_mobilenet(num_outputs: int, width_mult: float = 1.0) -> nn.Module:
    from torchvision.models import mobilenet_v3_small

    return mobilenet_v3_small(num_classes=num_outputs, width_mult=width_mult)


ARCHITECTURES: dict[str, tuple[dict[str, Callable[[Any], bool]], Callable[..., nn.Module]]] = {
    "convnet": (
        {
            "widths": lambda v: _int_list(v, 1, 5, 4, 512),
            "dropout": lambda v: type(v) in (int, float) and 0.0 <= v < 1.0,
        },
        _build_convnet,
    ),
    "resnet": ({"layers": lambda v: _int_list(v, 4, 4, 1, 4)}, _build_resnet),
    "mobilenet_v3_small": ({"width_mult": lambda v: type(v) in (int, float) and 0.25 <= v <= 2.0}, _build_mobilenet),
}


def build_network(architecture: str, kwargs: dict, num_outputs: int) -> nn.Module:
    """The bare network (logits out) for a validated architecture name + kwargs; ValueError otherwise."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r} (known: {', '.join(sorted(ARCHITECTURES))})")
    schema, builder = ARCHITECTURES[architecture]
    if not isinstance(kwargs, dict):
        raise TypeError(f"architecture kwargs must be a JSON object, got {type(kwargs).__name__}")
    unknown = sorted(set(kwargs) - set(schema))
    if unknown:
        raise ValueError(f"unknown {architecture} kwargs {unknown} (allowed: {sorted(schema)})")
    bad = sorted(key for key, value in kwargs.items() if not schema[key](value))
    if bad:
        raise ValueError(
            f"{architecture} kwargs out of range or of the wrong type: {', '.join(f'{k}={kwargs[k]!r}' for k in bad)}"
        )
    try:
        return builder(num_outputs, **kwargs)
    except TypeError as exc:  # a required kwarg missing
        raise ValueError(f"cannot build {architecture} from {kwargs}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------------


class AttributePredictor(nn.Module):
    """`predictor(images)`: [N, 3, H, W] in [-1, 1], any H and W -> probabilities [N, len(attributes)].

    Non-square inputs are centre-cropped to a square (as facebatch's image loader does), then resized
    to `resolution` with antialiased bicubic filtering. Everything is differentiable; `logits()` gives
    the pre-sigmoid scores (better behaved as a loss).
    """

    def __init__(
        self,
        architecture: str,
        arch_kwargs: dict,
        attributes: tuple[str, ...] | list[str] = CELEBA_ATTRIBUTES,
        resolution: int = 64,
        training_info: dict | None = None,
    ):
        super().__init__()
        self.architecture, self.arch_kwargs = architecture, dict(arch_kwargs)
        self.attributes = tuple(attributes)
        self.resolution = int(resolution)
        self.training_info = dict(training_info or {})
        self.net = build_network(architecture, self.arch_kwargs, len(self.attributes))

    def index(self, name: str) -> int:
        try:
            return self.attributes.index(name)
        except ValueError:
            raise KeyError(f"no attribute {name!r} (this predictor has {', '.join(self.attributes)})") from None

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W] in [-1, 1], got {list(images.shape)}")
        h, w = images.shape[-2:]
        if h != w:
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            images = images[..., top : top + side, left : left + side]
        if images.shape[-1] != self.resolution:
            # antialiased bicubic: closest to the Lanczos the training images went through (numbers in the card)
            images = F.interpolate(
                images, size=(self.resolution, self.resolution), mode="bicubic", align_corners=False, antialias=True
            )
        return images

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        param = next(self.net.parameters())
        return self.net(self.prepare(images.to(param.device, param.dtype))).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(images))

    def config(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "facebatch_version": __version__,
            "architecture": self.architecture,
            "arch_kwargs": self.arch_kwargs,
            "attributes": list(self.attributes),
            "resolution": self.resolution,
            "training": self.training_info,
        }


def save_predictor(path: Path, predictor: AttributePredictor, dtype: torch.dtype = torch.float16) -> Path:
    """Write atomically; floating tensors are stored as `dtype` (fp16 halves the file, outputs move < 1e-3)."""
    tensors = {}
    for name, value in predictor.net.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue  # a training counter; inference never reads it
        value = value.detach().to("cpu")
        tensors[name] = (value.to(dtype) if value.is_floating_point() else value).contiguous().clone()
    path = Path(path)
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(predictor.config(), sort_keys=True)})
    return path


def _check_config(config: Any) -> str | None:
    """What is wrong with a stored config, or None. Only checks types and bounds; build_network checks kwargs."""
    if not isinstance(config, dict):
        return f"the config is a JSON {type(config).__name__}, not an object"
    if config.get("format") != FORMAT_NAME:
        return f"format {config.get('format')!r} is not {FORMAT_NAME!r}"
    version = config.get("format_version")
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        return f"format_version {version!r} is not one this facebatch {__version__} reads (1..{FORMAT_VERSION})"
    missing = [key for key in ("architecture", "arch_kwargs", "attributes", "resolution") if key not in config]
    if missing:
        return f"the config lacks {', '.join(missing)}"
    if not isinstance(config["architecture"], str):
        return f"architecture must be a string, got {type(config['architecture']).__name__}"
    attrs = config["attributes"]
    if (
        not isinstance(attrs, list)
        or not 1 <= len(attrs) <= MAX_ATTRIBUTES
        or not all(isinstance(a, str) and 0 < len(a) <= 100 for a in attrs)
        or len(set(attrs)) != len(attrs)
    ):
        return f"attributes must be 1..{MAX_ATTRIBUTES} distinct non-empty names"
    res = config["resolution"]
    if type(res) is not int or not RESOLUTION_BOUNDS[0] <= res <= RESOLUTION_BOUNDS[1]:
        return f"resolution {res!r} is not an integer in {RESOLUTION_BOUNDS[0]}..{RESOLUTION_BOUNDS[1]}"
    if not isinstance(config.get("training", {}), dict):
        return "training info must be a JSON object"
    return None


def load_predictor(path: Path | str, device: str | torch.device = "cpu") -> AttributePredictor:
    """Read a predictor file, validate it and return the network in eval mode, frozen, float32, on `device`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such attribute-predictor file")
    config, tensors = read_file(path, "attribute predictor")
    if config is None:
        found = metadata_keys(path) or "nothing"
        raise CheckpointError(f"{path}: a safetensors file without a facebatch config (its metadata has {found})")
    problem = _check_config(config)
    if problem:
        raise CheckpointError(f"{path}: not a usable attribute predictor: {problem}")
    try:
        predictor = AttributePredictor(
            config["architecture"],
            config["arch_kwargs"],
            config["attributes"],
            config["resolution"],
            config.get("training") or {},
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot build the attribute predictor from its config ({exc})") from None
    expected = predictor.net.state_dict()
    expected = {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or wrong:

        def show(names):
            return names[:3] + ([f"... {len(names) - 3} more"] if len(names) > 3 else [])

        detail = "; ".join(
            f"{label} {show(names)}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if names
        )
        raise CheckpointError(f"{path}: its weights do not fit a {config['architecture']} predictor ({detail})")
    check_finite("predictor", tensors, path)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    predictor.net.load_state_dict(state, strict=False)  # strict up to num_batches_tracked, checked above
    return predictor.eval().requires_grad_(False).to(device)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def confident_fraction(probs: torch.Tensor, low: float = 0.1, high: float = 0.9) -> float:
    """Fraction of rows called with confidence (p < low or p > high)."""
    probs = probs.flatten()
    return float(((probs < low) | (probs > high)).float().mean()) if probs.numel() else math.nan
