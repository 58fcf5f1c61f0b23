"""Contact sheets, composed with PIL (a grid with text needs no plotting library; 48 matplotlib axes took seconds).

- `edit_grid`: augment's sheet per attribute: rows = source images, columns = strengths.
- `labelled_rows`: rows of rendered images with a label above each row (NADA's before/after grids).
- `reconstruction_sheet`: score's top-k images as caption | target | reconstruction | |difference|.
  Targets are re-read from source_path with the pipeline's own loader and centre-cropped to the
  reconstruction's size, as the projector saw them (runs made with --align saw the aligned face, so
  their difference column also shows the alignment). The difference uses one fixed colour scale for
  every row, so rows compare by eye.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MISSING = (200, 200, 200)

# edit_grid
CELL_MAX = 128  # px per cell; larger renders are shown downsampled
LINE = 14  # header text line height (PIL's default bitmap font)
GRID_HEADER = 2 * LINE + 4  # the title, then one label per column


def _grid_cell(path: Path | None, size: int) -> Image.Image:
    if path is None:
        return Image.new("RGB", (size, size), MISSING)
    try:
        with Image.open(path) as img:
            return img.convert("RGB").resize((size, size), Image.Resampling.BOX)
    except (OSError, ValueError):
        return Image.new("RGB", (size, size), MISSING)


def fit_label(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    """`text`, cut at the end with "~" until it fits `width` pixels: neighbouring column labels never overlap."""
    if draw.textlength(text) <= width:
        return text
    while text and draw.textlength(text + "~") > width:
        text = text[:-1]
    return text + "~"


def edit_grid(title: str, column_labels: Sequence[str], cells: Sequence[Sequence[Path | None]]) -> bytes:
    """One PNG: `cells[i][j]` is the image of row i, column j (None or unreadable: a grey cell).

    Cells are as large as the first readable image, at most CELL_MAX pixels.
    """
    size = CELL_MAX
    first = next((p for row in cells for p in row if p is not None), None)
    if first is not None:
        try:
            with Image.open(first) as probe:
                size = min(CELL_MAX, probe.size[0])
        except (OSError, ValueError):
            pass
    sheet = Image.new("RGB", (size * len(column_labels), GRID_HEADER + size * len(cells)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((3, 2), fit_label(draw, title, sheet.size[0] - 5), fill=(0, 0, 0))
    for j, label in enumerate(column_labels):
        draw.text((j * size + 3, LINE + 2), fit_label(draw, label, size - 5), fill=(0, 0, 0))
    for i, row in enumerate(cells):
        for j, path in enumerate(row):
            sheet.paste(_grid_cell(path, size), (j * size, GRID_HEADER + i * size))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def labelled_rows(rows: Sequence[tuple[str, Sequence[Image.Image]]]) -> bytes:
    """One PNG: per row a text line, then its images side by side (cells as large as the first image,
    at most CELL_MAX pixels)."""
    size = min(CELL_MAX, next((img.size[0] for _, imgs in rows for img in imgs), CELL_MAX))
    width = size * max((len(imgs) for _, imgs in rows), default=1)
    band = LINE + 4 + size
    sheet = Image.new("RGB", (width, band * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (label, imgs) in enumerate(rows):
        draw.text((3, i * band + 2), label, fill=(0, 0, 0))
        for j, img in enumerate(imgs):
            sheet.paste(img.convert("RGB").resize((size, size), Image.Resampling.BOX), (j * size, i * band + LINE + 4))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


# reconstruction_sheet
TILE = 160  # px per image in the sheet (reconstructions are resized to it, up or down)
CAPTION_WIDTH = 220
GAP = 4
SHEET_HEADER = 22
RIGHT_MARGIN = 28  # room for the colour bar's top label
DIFF_VMAX = 0.5  # |target - reconstruction| in [0, 1] pixel units mapped to the top colour
COLUMNS = ("target", "reconstruction", f"|difference|, 0 to {DIFF_VMAX:g}")


@dataclass
class SheetRow:
    image_id: str
    caption: str
    target_path: Path | None
    reconstruction_path: Path | None


def _read_reconstruction(path: Path | None) -> Image.Image | None:
    if path is None:
        return None
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _read_target(path: Path | None, size: int) -> Image.Image | None:
    """The source image as the projector saw it: the pipeline's own decode (EXIF, 16-bit, alpha) and crop."""
    from facebatch.pipeline.images import UnreadableImage, decode, read_bytes, square  # imports torch: only here

    if path is None:
        return None
    try:
        img, _ = decode(read_bytes(path), target=size)
    except UnreadableImage:
        return None
    return square(img, size)


def _difference(target: Image.Image, recon: Image.Image) -> Image.Image:
    from matplotlib import colormaps

    diff = np.abs(np.asarray(target, np.float32) - np.asarray(recon, np.float32)).mean(axis=2) / 255.0
    rgba = colormaps["inferno"](np.clip(diff / DIFF_VMAX, 0.0, 1.0))
    return Image.fromarray((rgba[..., :3] * 255).astype(np.uint8))


def _labelled_cell(img: Image.Image | None, text: str) -> Image.Image:
    if img is None:
        cell = Image.new("RGB", (TILE, TILE), (235, 235, 235))
        ImageDraw.Draw(cell).multiline_text((8, TILE // 2 - 20), text, fill=(90, 90, 90), font=_font(11))
        return cell
    resample = Image.Resampling.NEAREST if img.width < TILE else Image.Resampling.LANCZOS
    return img.resize((TILE, TILE), resample)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def _colour_bar(width: int) -> Image.Image:
    from matplotlib import colormaps

    ramp = colormaps["inferno"](np.linspace(0.0, 1.0, width))[None, :, :3]
    return Image.fromarray((np.repeat(ramp, 8, axis=0) * 255).astype(np.uint8))


def reconstruction_sheet(rows: list[SheetRow]) -> bytes:
    """One PNG; missing reconstructions or unreadable targets become grey cells that say so."""
    width = CAPTION_WIDTH + 3 * (TILE + GAP) + RIGHT_MARGIN
    sheet = Image.new("RGB", (width, SHEET_HEADER + len(rows) * (TILE + GAP) + 24), "white")
    draw = ImageDraw.Draw(sheet)
    for col, title in enumerate(COLUMNS):
        draw.text((CAPTION_WIDTH + col * (TILE + GAP) + 4, 4), title, fill="black", font=_font(12))
    for i, row in enumerate(rows):
        top = SHEET_HEADER + i * (TILE + GAP)
        recon = _read_reconstruction(row.reconstruction_path)
        target = _read_target(row.target_path, recon.width if recon is not None else TILE)
        diff = (
            _difference(target, recon)
            if target is not None and recon is not None and recon.size == target.size
            else None
        )
        cells = (
            _labelled_cell(target, "target\nunreadable"),
            _labelled_cell(recon, "no reconstruction\n(project with\n--save-reconstructions)"),
            _labelled_cell(diff, "-"),
        )
        for col, cell in enumerate(cells):
            sheet.paste(cell, (CAPTION_WIDTH + col * (TILE + GAP), top))
        draw.multiline_text((6, top + 6), row.caption, fill="black", font=_font(12), spacing=4)
    bar_left = CAPTION_WIDTH + 2 * (TILE + GAP)
    sheet.paste(_colour_bar(TILE), (bar_left, sheet.height - 20))
    draw.text((bar_left - 12, sheet.height - 21), "0", fill="black", font=_font(10))
    draw.text((bar_left + TILE + 3, sheet.height - 21), f"{DIFF_VMAX:g}", fill="black", font=_font(10))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()
