"""Region masks for the mixing applications: built-in hole shapes, and mask PNGs read for an image.

A mask is a float tensor of 0s and 1s, [B, 1, R, R] in a batch; 1 marks the region (the hole to
fill, the part taken from image A, the region that gets the style). Built-in shapes are fractions
of the side, so a name means the same region at every resolution. The face parts (eyes, mouth)
assume FFHQ-style alignment; CelebA's aligned crops, centre-cropped to a square as facebatch reads
them, put the eyes and mouth at about the same heights.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.images import UnreadableImage, decode, read_bytes

__all__ = ["SHAPES", "LoadedMask", "as_mask_batch", "box_mask", "hole_mask", "load_mask"]

SHAPES = ("center", "left", "right", "eyes", "mouth", "random-box")
# (top, bottom, left, right) as fractions of the side
BOXES = {
    "center": (0.25, 0.75, 0.25, 0.75),
    "left": (0.0, 1.0, 0.0, 0.5),
    "right": (0.0, 1.0, 0.5, 1.0),
    "eyes": (0.36, 0.58, 0.2, 0.8),
    "mouth": (0.68, 0.88, 0.3, 0.7),
}
RANDOM_BOX_SIDE = (0.25, 0.5)  # each side of a random box, as a fraction of the image side
ASPECT_TOLERANCE = 0.01  # relative: a mask saved at another size may round its sides by a pixel


def box_mask(box: tuple[float, float, float, float], resolution: int) -> torch.Tensor:
    """[1, R, R] with ones inside the (top, bottom, left, right) fractional box, edges rounded to pixels."""
    top, bottom, left, right = (round(f * resolution) for f in box)
    mask = torch.zeros(1, resolution, resolution)
    mask[:, top:bottom, left:right] = 1.0
    return mask


def hole_mask(shape: str, resolution: int, batch: int = 1, seeds: Sequence[int] | None = None) -> torch.Tensor:
    """[B, 1, R, R] for a built-in shape; `random-box` draws each image's box from its own seed (default 0..B-1)."""
    if shape not in SHAPES:
        raise InputError(f"unknown mask shape {shape!r}; choose one of {', '.join(SHAPES)} or give a mask PNG")
    if shape != "random-box":
        return box_mask(BOXES[shape], resolution)[None].repeat(batch, 1, 1, 1)
    seeds = list(range(batch)) if seeds is None else list(seeds)
    if len(seeds) != batch:
        raise InputError(f"one seed per mask: {len(seeds)} seeds for {batch} masks")
    masks = []
    for seed in seeds:
        rng = np.random.RandomState(int(seed) % 2**32)
        h, w = rng.uniform(*RANDOM_BOX_SIDE, size=2)
        top, left = rng.uniform(0.0, 1.0 - h), rng.uniform(0.0, 1.0 - w)
        masks.append(box_mask((top, top + h, left, left + w), resolution))
    return torch.stack(masks)


def as_mask_batch(mask: torch.Tensor, batch: int, resolution: int) -> torch.Tensor:
    """A mask given as [R,R], [1,R,R], [1,1,R,R] (shared) or [B,1,R,R], as a float [B,1,R,R] in [0, 1]."""
    mask = torch.as_tensor(mask, dtype=torch.float32)
    while mask.ndim < 4:
        mask = mask[None]
    if mask.shape[1] != 1 or tuple(mask.shape[2:]) != (resolution, resolution) or mask.shape[0] not in (1, batch):
        raise InputError(f"a mask must be [1 or {batch}, 1, {resolution}, {resolution}], got {list(mask.shape)}")
    if mask.min() < 0 or mask.max() > 1:
        raise InputError("mask values must lie in [0, 1]")
    return mask.expand(batch, 1, resolution, resolution).contiguous()


@dataclass
class LoadedMask:
    mask: torch.Tensor  # [1, R, R] of 0s and 1s
    thresholded: bool  # the file held values other than black and white; they were cut at 0.5
    resized: bool  # the file's square was another size than R (nearest-neighbour)
    source_size: tuple[int, int]  # (width, height) of the file


def _grey(path: Path) -> Image.Image:
    """The mask's level as an 'L' image: the alpha channel when the file has real transparency, else the grey."""
    try:
        data = read_bytes(str(path))
        with Image.open(io.BytesIO(data)) as probe:
            if probe.mode in ("RGBA", "LA", "PA") or (probe.mode == "P" and "transparency" in probe.info):
                alpha = ImageOps.exif_transpose(probe).convert("RGBA").getchannel("A")
                if alpha.getextrema() != (255, 255):  # painted strokes on a transparent layer
                    return alpha
        return decode(data)[0].convert("L")
    except (UnreadableImage, OSError) as exc:
        raise InputError(f"cannot read mask {path}: {exc}") from None


def load_mask(path: str | Path, resolution: int, image_size: tuple[int, int] | None = None) -> LoadedMask:
    """Read a mask PNG drawn on an image of `image_size` (width, height; None: on the square R x R input).

    The mask must have the image's aspect ratio; it is centre-cropped to a square exactly as the image
    is, resized nearest-neighbour to R, and cut at 0.5 when it is not already black and white.
    """
    path = storage.location(path)
    grey = _grey(path)
    width, height = grey.size
    iw, ih = image_size if image_size is not None else (1, 1)
    if abs((width / height) / (iw / ih) - 1.0) > ASPECT_TOLERANCE:
        of = f"its image is {iw}x{ih}" if image_size is not None else "the input is square"
        raise InputError(f"mask {path} is {width}x{height} but {of}: the mask must have its image's aspect ratio")
    levels = np.asarray(grey, dtype=np.float32) / 255.0
    thresholded = not np.isin(levels, (0.0, 1.0)).all()
    binary = Image.fromarray(((levels >= 0.5) * 255).astype(np.uint8))
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = binary.crop((left, top, left + side, top + side))
    if side != resolution:
        square = square.resize((resolution, resolution), Image.Resampling.NEAREST)
    mask = torch.from_numpy(np.asarray(square, dtype=np.float32) / 255.0)[None]
    return LoadedMask(mask=mask, thresholded=bool(thresholded), resized=side != resolution, source_size=(width, height))
