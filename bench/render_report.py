"""Render a `facebatch score` report.html in headless Chromium: did every image decode, and a screenshot.

    python bench/render_report.py OUT/report/report.html --out report.png

The report's own script writes data-images-loaded="ok/total" and data-page-height on <body>
once the page has loaded; a first Chromium pass dumps the DOM to read them, a second takes a
screenshot of the whole page height. Exit 1 when an image failed to decode or the screenshot
is blank. Chromium: `apt-get install -y chromium` (Debian) or set $CHROMIUM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH = 1200
MAX_HEIGHT = 16000


def find_chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _chromium(binary: str, profile: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def render(html: Path, png: Path, chromium: str | None = None, timeout: float = 120.0) -> dict:
    binary = chromium or find_chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium found: apt-get install -y chromium (or set $CHROMIUM)")
    url = Path(html).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="facebatch-chromium-") as profile:
        # Same width as the screenshot, so the measured page height is the one the screenshot needs.
        dom = _chromium(binary, profile, f"--window-size={WIDTH},800", "--dump-dom", url, timeout=timeout).stdout
        loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
        height = re.search(r'data-page-height="(\d+)"', dom)
        page_height = min(int(height.group(1)) + 40, MAX_HEIGHT) if height else 4000
        png = Path(png).resolve()
        png.parent.mkdir(parents=True, exist_ok=True)
        _chromium(binary, profile, f"--window-size={WIDTH},{page_height}", f"--screenshot={png}", url, timeout=timeout)
    result = {
        "html": str(html),
        "screenshot": str(png),
        "page_height": page_height,
        "images_loaded": int(loaded.group(1)) if loaded else None,
        "images_total": int(loaded.group(2)) if loaded else None,
    }
    if png.exists():
        pixels = np.asarray(Image.open(png).convert("RGB"))
        result["screenshot_size"] = [int(pixels.shape[1]), int(pixels.shape[0])]
        # Share of pixels that are neither near-white nor grey: plots and photos, not just text.
        spread = pixels.max(axis=2).astype(int) - pixels.min(axis=2).astype(int)
        result["colour_fraction"] = float((spread > 40).mean())
        result["non_white_fraction"] = float((pixels.min(axis=2) < 235).mean())
    return result


def ok(result: dict) -> bool:
    return (
        result.get("images_total") is not None
        and result["images_total"] > 0
        and result["images_loaded"] == result["images_total"]
        and result.get("non_white_fraction", 0.0) > 0.02
        and result.get("colour_fraction", 0.0) > 0.005
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="screenshot PNG (default: beside the HTML)")
    args = parser.parse_args(argv)
    out = args.out or args.html.with_name("report_screenshot.png")
    start = time.perf_counter()
    result = render(args.html, out)
    result["render_seconds"] = round(time.perf_counter() - start, 2)  # two Chromium launches
    result["command"] = " ".join(["python", *sys.argv])
    result["verdict"] = "ok: every image decoded, screenshot not blank" if ok(result) else "FAILED"
    print(json.dumps(result, indent=2))
    return 0 if ok(result) else 1


if __name__ == "__main__":
    sys.exit(main())
