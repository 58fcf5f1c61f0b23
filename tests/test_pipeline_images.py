"""Image loading: every mode users' folders contain converts correctly; undecodable files raise UnreadableImage."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facebatch.pipeline.images import UnreadableImage, load_image, save_image

SIZE = 32


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG written by hand: PIL cannot write 16-bit RGB, and a bomb header needs no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def pixels(t: torch.Tensor) -> np.ndarray:
    """[3,H,W] in [-1,1] -> HxWx3 uint8-scale floats."""
    return (t.permute(1, 2, 0).numpy() + 1) * 127.5


def test_rgb_square_round_trips_through_save_and_load(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    t, info = load_image(save(Image.fromarray(arr), tmp_path / "a.png"), SIZE)
    assert t.shape == (3, SIZE, SIZE) and t.dtype == torch.float32 and -1 <= t.min() and t.max() <= 1
    assert np.abs(pixels(t) - arr).max() < 1e-3  # same size: no resampling, exact
    assert (info["orig_width"], info["orig_height"]) == (SIZE, SIZE) and len(info["file_sha256"]) == 64
    save_image(t, tmp_path / "b.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), arr)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic write left no temp file


def test_non_square_is_centre_cropped_and_resized(tmp_path):
    arr = np.zeros((40, 120, 3), np.uint8)
    arr[:, 40:80] = 255  # a white centre square between black side bands
    t, info = load_image(save(Image.fromarray(arr), tmp_path / "wide.png"), 20)
    assert (info["orig_width"], info["orig_height"]) == (120, 40)
    assert pixels(t).min() > 250  # the side bands were cropped away


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # stored: red left half, blue right half
    arr[:, 20:] = (0, 0, 255)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display": red ends up on top
    path = save(img, tmp_path / "rot.jpg", exif=exif, quality=95)
    t, info = load_image(path, 20)
    assert (info["orig_width"], info["orig_height"]) == (20, 40)  # as a viewer shows it
    p = pixels(t)
    assert p[2, 10, 0] > 200 and p[2, 10, 2] < 60  # top is red
    assert p[17, 10, 2] > 200 and p[17, 10, 0] < 60  # bottom is blue


def test_grayscale_palette_rgba_and_cmyk_convert(tmp_path):
    grey = load_image(save(Image.new("L", (SIZE, SIZE), 100), tmp_path / "g.png"), SIZE)[0]
    assert np.allclose(pixels(grey), 100, atol=0.01)
    pal = Image.new("P", (SIZE, SIZE), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert np.allclose(pixels(load_image(save(pal, tmp_path / "p.png"), SIZE)[0]), (10, 200, 30), atol=0.01)
    rgba = Image.new("RGBA", (SIZE, SIZE), (200, 0, 0, 0))  # fully transparent red -> the white background
    rgba.paste((0, 0, 200, 255), (0, 0, SIZE // 2, SIZE))  # left half opaque blue
    p = pixels(load_image(save(rgba, tmp_path / "a.png"), SIZE)[0])
    assert np.allclose(p[:, : SIZE // 2 - 1], (0, 0, 200), atol=0.01) and np.allclose(
        p[:, SIZE // 2 + 1 :], 255, atol=0.01
    )
    cmyk = Image.new("RGB", (SIZE, SIZE), (30, 120, 220)).convert("CMYK")
    p = pixels(load_image(save(cmyk, tmp_path / "c.jpg", quality=100), SIZE)[0])
    assert np.abs(p - (30, 120, 220)).max() < 6  # colour survives (JPEG rounding only)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    grey16 = Image.fromarray(np.full((SIZE, SIZE), 32768, np.uint16))  # half of 65535
    assert np.allclose(pixels(load_image(save(grey16, tmp_path / "g16.png"), SIZE)[0]), 127.5, atol=0.6)
    rgb16 = np.zeros((4, 4, 3), ">u2")
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 16384, 0
    rows = b"".join(b"\x00" + row.tobytes() for row in rgb16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(raw_png(4, 4, 16, 2, rows))
    assert np.allclose(pixels(load_image(path, 4)[0])[0, 0], (255, 64, 0), atol=1)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.png", b"this is not an image\n" * 10, "not an image"),
        ("truncated.jpg", None, "corrupt"),
        ("bomb.png", raw_png(30000, 30000, 1, 0, b"\x00" * 10), "decompression"),
    ],
)
def test_unreadable_files_raise_with_a_clear_message(tmp_path, name, content, message):
    if content is None:  # a real JPEG cut in half
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(buf, "JPEG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableImage, match=message) as caught:
        load_image(path, SIZE)
    if content:
        assert len(caught.value.image_info["file_sha256"]) == 64  # an error row still says which bytes failed


def test_a_file_that_is_no_image_is_named_by_what_it_is_not_never_by_its_bytes(tmp_path):
    """The message reaches the console and the manifest: a file's first bytes (a key, a token, a header) must
    not, whether shown as hex or as text."""
    for name, content in (
        ("secret.png", b"AKIAIOSFODNN7EXAMPLE\n" * 4),
        ("archive.jpg", b"PK\x03\x04\x14\x00\x00\x00" + b"\x00" * 64),
        ("program.png", b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64),
        ("doc.jpg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" * 8),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(UnreadableImage) as caught:
            load_image(path, SIZE)
        message = str(caught.value)
        assert message.startswith("not an image file PIL can read") and f"{len(content)} bytes" in message, message
        assert content[:8].hex() not in message and content[:4].decode("latin-1") not in message, message


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(UnreadableImage, match="cannot read"):
        load_image(tmp_path / "gone.png", SIZE)


def test_large_jpeg_decodes_reduced_but_keeps_its_true_size(tmp_path):
    arr = np.tile(np.linspace(0, 255, 2000, dtype=np.uint8)[None, :, None], (1000, 1, 3))
    t, info = load_image(save(Image.fromarray(arr), tmp_path / "big.jpg", quality=95), 64)
    assert (info["orig_width"], info["orig_height"]) == (2000, 1000)
    row = pixels(t)[32, :, 0]
    assert np.all(np.diff(row) > -2) and 60 < row[0] < 70  # centre crop of a smooth ramp, still a ramp
