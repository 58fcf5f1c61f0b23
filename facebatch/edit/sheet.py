"""Contact sheets of an augment run: one PNG per attribute, rows = source images, columns = strengths.

Built from the manifest and the PNGs on disk after the run (so a resumed run gets a complete
sheet), with PIL: a plain grid with a text header needs no plotting library.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as pads
from PIL import Image, ImageDraw

from facebatch.edit.augment import SHEETS, TABLE, safe_name, strength_label
from facebatch.pipeline.atomic import atomic_write_bytes

CELL_MAX = 128  # px per cell; larger renders are shown downsampled
LINE = 14  # header text line height (PIL's default bitmap font)
HEADER = 2 * LINE + 4  # the attribute name, then one strength label per column
MISSING = (200, 200, 200)


def _cell(path: Path, size: int) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB").resize((size, size), Image.Resampling.BOX)
    except (OSError, ValueError):
        return Image.new("RGB", (size, size), MISSING)


def write_contact_sheets(out_dir: Path, max_rows: int = 16) -> dict[str, Path]:
    """Sheets for every attribute in OUT/manifest; returns {attribute: png path}."""
    out_dir = Path(out_dir)
    table = pads.dataset(str(out_dir / TABLE), format="parquet").to_table(
        columns=["source_image_id", "attribute", "strength", "path", "status"]
    )
    written = {}
    for attr in sorted(set(table.column("attribute").to_pylist())):
        rows = table.filter(pc.equal(table.column("attribute"), attr)).to_pylist()
        strengths = sorted({r["strength"] for r in rows})
        sources = list(dict.fromkeys(r["source_image_id"] for r in rows))[:max_rows]
        cells = {(r["source_image_id"], r["strength"]): r for r in rows}
        size = CELL_MAX
        first_ok = next((r for r in rows if r["status"] == "ok"), None)
        if first_ok is not None:
            with Image.open(out_dir / first_ok["path"]) as probe:
                size = min(CELL_MAX, probe.size[0])
        sheet = Image.new("RGB", (size * len(strengths), HEADER + size * len(sources)), (255, 255, 255))
        draw = ImageDraw.Draw(sheet)
        draw.text((3, 2), attr, fill=(0, 0, 0))
        for j, s in enumerate(strengths):
            draw.text((j * size + 3, LINE + 2), strength_label(s), fill=(0, 0, 0))
        for i, src in enumerate(sources):
            for j, s in enumerate(strengths):
                row = cells.get((src, s))
                if row is not None and row["status"] == "ok":
                    tile = _cell(out_dir / row["path"], size)
                else:
                    tile = Image.new("RGB", (size, size), MISSING)
                sheet.paste(tile, (j * size, HEADER + i * size))
        buf = io.BytesIO()
        sheet.save(buf, format="PNG")
        path = out_dir / SHEETS / f"{safe_name(attr)}.png"
        atomic_write_bytes(path, buf.getvalue())
        written[attr] = path
    return written

