"""Image files in and out: the one place where pixels become [-1, 1] RGB tensors and back.

Loading follows what users' folders contain: EXIF orientation, every PIL mode (16-bit, CMYK, palette,
alpha), any aspect ratio. Anything that cannot be decoded raises UnreadableImage, which stages turn
into an error row instead of a crash.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from facebatch.errors import first_line
from facebatch.pipeline import storage
from facebatch.pipeline.atomic import atomic_write_bytes
from facebatch.pipeline.discover import file_kind

# PIL raises DecompressionBombError above twice this many pixels and only warns between 1x and 2x;
# we refuse from 1x: a 180-megapixel "face photo" is far more likely a bomb than a portrait.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
BACKGROUND = (255, 255, 255)  # what transparent pixels become


class UnreadableImage(Exception):
    """The file is not a decodable image (empty, truncated, another format, too large)."""


# No face photo needs more: a file past this is refused before it is read (a 2 GB file named .png would
# otherwise cost 2 GB per worker). FACEBATCH_MAX_IMAGE_BYTES raises it.
MAX_IMAGE_BYTES = int(os.environ.get("FACEBATCH_MAX_IMAGE_BYTES", 256 << 20))
SNIFF_BYTES = 16
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
)


def sniff_image(head: bytes) -> str | None:
    """The image format the first bytes announce, or None (then the rest of the file is never read)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if len(head) >= 2 and head[0:1] == b"P" and head[1:2] in b"123456":
        return "PNM"
    return next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)


def read_bytes(path: Path) -> bytes:
    """The file's bytes, after cheap checks: a regular file (a FIFO or device is refused without blocking
    on it), not empty, at most MAX_IMAGE_BYTES, and starting like an image (only then is the rest read).
    An object-store URL is read through fsspec straight from the store, with the same checks."""
    if storage.is_url(path):
        return _read_object(storage.location(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UnreadableImage(f"cannot read file: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableImage(f"not a regular file ({file_kind(st.st_mode)})")
        if st.st_size == 0:
            raise UnreadableImage("empty file (0 bytes)")
        if st.st_size > MAX_IMAGE_BYTES:
            raise UnreadableImage(
                f"file of {st.st_size} bytes exceeds the {MAX_IMAGE_BYTES >> 20} MiB limit for an image "
                "(FACEBATCH_MAX_IMAGE_BYTES raises it)"
            )
        with os.fdopen(os.dup(fd), "rb") as fh:
            head = fh.read(SNIFF_BYTES)
            if sniff_image(head) is None:
                # What the file is not, never its bytes: they would be echoed to the console and the manifest.
                exc = UnreadableImage(
                    f"not an image file PIL can read (its first bytes match no image format; {st.st_size} bytes)"
                )
                exc.image_info = {"file_sha256": _hash_rest(fh, head)}  # the error row says which bytes failed
                raise exc
            data = head + fh.read(MAX_IMAGE_BYTES + 1 - len(head))
    except OSError as exc:
        raise UnreadableImage(f"cannot read file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_IMAGE_BYTES:  # grew while being read
        raise UnreadableImage(f"file exceeds the {MAX_IMAGE_BYTES >> 20} MiB limit for an image")
    return data


def _read_object(loc) -> bytes:
    try:
        length = storage.size(loc)
        if length == 0:
            raise UnreadableImage("empty object (0 bytes)")
        if length > MAX_IMAGE_BYTES:
            raise UnreadableImage(
                f"object of {length} bytes exceeds the {MAX_IMAGE_BYTES >> 20} MiB limit for an image "
                "(FACEBATCH_MAX_IMAGE_BYTES raises it)"
            )
        with loc.open("rb") as fh:
            head = fh.read(SNIFF_BYTES)
            if sniff_image(head) is None:
                exc = UnreadableImage(
                    f"not an image file PIL can read (its first bytes match no image format; {length} bytes)"
                )
                exc.image_info = {"file_sha256": _hash_rest(fh, head)}
                raise exc
            data = head + fh.read(MAX_IMAGE_BYTES + 1 - len(head))
    except UnreadableImage:
        raise
    except Exception as exc:  # noqa: BLE001 - the store's errors (missing, denied, unreachable) become the row's error
        raise UnreadableImage(f"cannot read object: {first_line(exc, with_type=True)}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise UnreadableImage(f"object exceeds the {MAX_IMAGE_BYTES >> 20} MiB limit for an image")
    return data


def prefetch(paths) -> dict[str, bytes]:
    """The bytes of the object-store images among `paths`, fetched concurrently (fsspec's batched `cat`,
    async for s3/gcs/azure): one request per image in flight together instead of a HEAD and a GET one after
    another, which made small-image reads the slowest part of a fast preset's shard. Sizes come from one
    listing per folder, and an object past MAX_IMAGE_BYTES (or one that failed) is left out: `load_image`
    then reads it alone and says what is wrong. Local paths are never prefetched (the page cache is faster)."""
    by_fs: dict[int, tuple[Any, dict[str, str]]] = {}
    for path in paths:
        if path and storage.is_url(path):
            loc = storage.location(path)
            by_fs.setdefault(id(loc.fs), (loc.fs, {}))[1][loc.path] = str(path)
    found: dict[str, bytes] = {}
    for fs, wanted in by_fs.values():
        try:
            sizes = {}
            for folder in {key.rsplit("/", 1)[0] for key in wanted}:
                sizes.update({e["name"]: e.get("size") for e in fs.ls(folder, detail=True)})
            fetch = [key for key in wanted if isinstance(sizes.get(key), int) and 0 < sizes[key] <= MAX_IMAGE_BYTES]
            got = fs.cat(fetch, on_error="return") if fetch else {}
        except Exception:  # noqa: BLE001 - prefetch is an optimisation: each image is then read on its own
            continue
        for key, data in got.items():
            if isinstance(data, bytes):
                found[wanted[key]] = data
    return found


def _checked(data: bytes) -> bytes:
    """The checks `read_bytes` makes, on bytes already fetched."""
    if not data:
        raise UnreadableImage("empty object (0 bytes)")
    if len(data) > MAX_IMAGE_BYTES:
        raise UnreadableImage(f"object exceeds the {MAX_IMAGE_BYTES >> 20} MiB limit for an image")
    if sniff_image(data[:SNIFF_BYTES]) is None:
        exc = UnreadableImage(
            f"not an image file PIL can read (its first bytes match no image format; {len(data)} bytes)"
        )
        exc.image_info = {"file_sha256": hashlib.sha256(data).hexdigest()}
        raise exc
    return data


def _hash_rest(fh, head: bytes) -> str:
    """sha256 of the whole file in 1 MiB chunks: bounded memory, whatever its size."""
    digest = hashlib.sha256(head)
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def decode(data: bytes, target: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Fully decoded, upright RGB image (any mode in), and the file's (width, height) as a viewer shows it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_PIXELS:
                raise UnreadableImage(
                    f"{img.width}x{img.height} pixels exceeds the decompression-bomb limit ({MAX_PIXELS})"
                )
            swapped = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap the axes
            original = (img.height, img.width) if swapped else (img.width, img.height)
            if target and img.format == "JPEG" and img.mode in ("RGB", "L"):
                # DCT-domain downscale by a power of two, still >= 2x the target side: much faster
                # decoding of large JPEGs, and the final LANCZOS resize keeps the quality.
                img.draft(img.mode, (2 * target, 2 * target))
            img.load()
            img = ImageOps.exif_transpose(img)
    except UnreadableImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise UnreadableImage("not an image file PIL can identify") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        raise UnreadableImage(f"corrupt image data: {exc}") from None
    return to_rgb(img), original


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert every PIL mode to 8-bit RGB with the right scaling (PIL's own convert clips 16-bit to 255)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        # PNG/TIFF 16-bit greys open as I;16 or I with values 0..65535.
        peak = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        peak = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return img.convert("RGB") if img.mode != "RGB" else img


def square(img: Image.Image, size: int) -> Image.Image:
    """Centre crop to a square, then LANCZOS to size x size.

    Cropping first (rather than ImageOps.fit's resize-with-box) keeps the filter from reading pixels
    outside the crop, which would bleed the cut-away borders into the edge rows.
    """
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    cropped = img.crop((left, top, left + side, top + side))
    return cropped if side == size else cropped.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    t = tensor.detach().to("cpu", torch.float32)
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"expected an image tensor [3,H,W] in [-1,1], got shape {tuple(t.shape)}")
    arr = t.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


AlignFn = Callable[[Image.Image, int], tuple[Image.Image, np.ndarray]]


def load_image(
    path: Path, size: int, align: AlignFn | None = None, data: bytes | None = None
) -> tuple[torch.Tensor, dict[str, Any]]:
    """A file as a [3, size, size] tensor in [-1, 1], plus facts for the output row.

    `align(pil, size) -> (aligned pil, quad [4,2])` replaces the centre crop when given (it may raise
    its own exception, e.g. no face found, which the caller turns into an error row too). `data`: the file's
    bytes when already fetched (`prefetch`), checked as `read_bytes` checks a file.
    """
    data = _checked(data) if data is not None else read_bytes(path)
    info: dict[str, Any] = {"file_sha256": hashlib.sha256(data).hexdigest()}
    try:
        img, (info["orig_width"], info["orig_height"]) = decode(data, target=None if align else size)
        if align is not None:
            aligned, quad = align(img, size)
            info["quad"] = np.asarray(quad, dtype=np.float32).reshape(4, 2)
            img = aligned if aligned.size == (size, size) else square(aligned, size)
        else:
            img = square(img, size)
    except Exception as exc:
        exc.image_info = info  # an error row still records which file content failed
        raise
    return pil_to_tensor(img), info


def image_to_tensor(image, size: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """An image already in memory as `load_image` gives a file: a PIL image (centre crop, LANCZOS to size) or a
    [3, size, size] tensor in [-1, 1], as is. Anything else is an UnreadableImage (an error row)."""
    if isinstance(image, Image.Image):
        img = image.convert("RGB")
        return pil_to_tensor(square(img, size)), {"orig_width": img.width, "orig_height": img.height}
    if isinstance(image, torch.Tensor):
        if tuple(image.shape) != (3, size, size) or not image.is_floating_point():
            raise UnreadableImage(
                f"a tensor image must be float [3, {size}, {size}] in [-1, 1], got {image.dtype} {list(image.shape)}"
            )
        if not torch.isfinite(image).all():
            raise UnreadableImage("the tensor image holds NaN or infinite values")
        return image.detach().to("cpu", torch.float32), {"orig_width": size, "orig_height": size}
    raise UnreadableImage(f"not an image: {type(image).__name__} (give a PIL image, a tensor or a file path)")


def save_image(tensor: torch.Tensor, path: Path) -> None:
    """A [3,H,W] tensor in [-1, 1] as an 8-bit PNG (or the format the suffix names), written atomically."""
    path = storage.location(path)
    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")
    tensor_to_pil(tensor).save(buf, format=fmt, **({"quality": 95} if fmt != "PNG" else {}))
    atomic_write_bytes(path, buf.getvalue())
