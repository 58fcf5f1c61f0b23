"""Contact sheets, composed with PIL (a grid with text needs no plotting library; 48 matplotlib axes took seconds).

- `edit_grid`: augment's sheet per attribute: rows = source images (labelled by id), columns = original |
  reconstruction (framed: strength 0) | strengths.
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


ROW_LABEL_WIDTH = 96
MARK = (220, 60, 40)


def open_image(path) -> Image.Image:
    """PIL's Image.open for a local path or an object-store URL (read whole: a cell is a small PNG). The store's
    own errors come back as OSError, which the callers treat as a missing cell."""
    from facebatch.pipeline import storage

    if not storage.is_url(path):
        return Image.open(path)
    try:
        return Image.open(io.BytesIO(storage.location(path).read_bytes()))
    except Exception as exc:  # noqa: BLE001 - missing, denied, unreachable: a missing cell, like a local OSError
        raise OSError(str(exc)) from None


def _grid_cell(path: Path | None, size: int) -> Image.Image:
    """The image at `path` as a size x size cell: a non-square photo is centre-cropped first, as the projector
    saw it (a stretched face would not compare)."""
    if path is None:
        return Image.new("RGB", (size, size), MISSING)
    try:
        with open_image(path) as img:
            w, h = img.size
            side = min(w, h)
            box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
            return img.convert("RGB").crop(box).resize((size, size), Image.Resampling.BOX)
    except (OSError, ValueError):
        return Image.new("RGB", (size, size), MISSING)


def fit_label(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    """`text`, cut at the end with "~" until it fits `width` pixels: neighbouring column labels never overlap."""
    if draw.textlength(text) <= width:
        return text
    while text and draw.textlength(text + "~") > width:
        text = text[:-1]
    return text + "~"


def edit_grid(
    title: str,
    column_labels: Sequence[str],
    cells: Sequence[Sequence[Path | None]],
    row_labels: Sequence[str] | None = None,
    marked_column: int | None = None,
) -> bytes:
    """One PNG: `cells[i][j]` is the image of row i, column j (None or unreadable: a grey cell).

    Cells are as large as the first generated image (column 1 on: column 0 may hold large photos), at most
    CELL_MAX pixels; `row_labels` go in a column on the left; `marked_column` gets a frame (strength 0).
    The title is never cut: the sheet widens to fit it.
    """
    size = CELL_MAX
    probes = [p for row in cells for p in row[1:] if p is not None] + [p for row in cells for p in row if p]
    for probe_path in probes[:1]:
        try:
            with open_image(probe_path) as probe:
                size = min(CELL_MAX, probe.size[0])
        except (OSError, ValueError):
            pass
    left = ROW_LABEL_WIDTH if row_labels is not None else 0
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(left + size * len(column_labels), int(measure.textlength(title)) + 8)
    sheet = Image.new("RGB", (width, GRID_HEADER + size * len(cells)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((3, 2), title, fill=(0, 0, 0))
    for j, label in enumerate(column_labels):
        colour = MARK if j == marked_column else (0, 0, 0)
        draw.text((left + j * size + 3, LINE + 2), fit_label(draw, label, size - 5), fill=colour)
    for i, row in enumerate(cells):
        top = GRID_HEADER + i * size
        if row_labels is not None:
            draw.text((3, top + size // 2 - LINE // 2), fit_label(draw, str(row_labels[i]), left - 6), fill=(0, 0, 0))
        for j, path in enumerate(row):
            sheet.paste(_grid_cell(path, size), (left + j * size, top))
    if marked_column is not None and cells:
        x0 = left + marked_column * size
        draw.rectangle((x0, GRID_HEADER, x0 + size - 1, GRID_HEADER + size * len(cells) - 1), outline=MARK, width=2)
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
        with open_image(path) as img:
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
