"""Make the README's pictures from real outputs: the built-in generator's samples, and target |
reconstruction pairs from a `make demo` run, so what the README shows is what a user gets.

    python bench/readme_figures.py --run demo-out --out docs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from facebatch import load_generator
from facebatch.pipeline.images import load_image
from facebatch.pipeline.rundir import RunDir


def _to_pil(x: torch.Tensor, scale: int) -> Image.Image:
    """[3,R,R] in [-1, 1] -> RGB image, upscaled with nearest neighbour so the pixels stay honest."""
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(arr)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def _grid(tiles: list[Image.Image], cols: int, pad: int = 2) -> Image.Image:
    w, h = tiles[0].size
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)))
    return sheet


def samples_figure(generator: str, n: int, seed: int, scale: int) -> Image.Image:
    G = load_generator(generator, with_d=False).G
    z = torch.from_numpy(np.random.RandomState(seed).randn(n, G.z_dim)).float()
    with torch.no_grad():
        images = G(z, None, noise_mode="const")
    return _grid([_to_pil(x, scale) for x in images], cols=8)


def reconstructions_figure(run: Path, n: int, scale: int) -> Image.Image:
    """Pairs (target | reconstruction) with each pair's PSNR, in the run's image order."""
    rundir = RunDir(run)
    table = pd.read_parquet(rundir.table_dir, columns=["image_id", "source_path", "status", "psnr"])
    table = table[table.status == "ok"].sort_values("image_id").head(n)
    if table.empty:
        raise SystemExit(f"{run} has no ok rows")
    tiles = []
    for row in table.itertuples():
        recon_path = rundir.reconstruction(row.image_id)
        if not recon_path.is_file():
            raise SystemExit(f"{recon_path} is missing: project with --save-reconstructions")
        recon = Image.open(recon_path).convert("RGB")
        target, _ = load_image(Path(row.source_path), recon.width)
        pair = Image.new("RGB", (2 * recon.width * scale, recon.height * scale + 14), "white")
        pair.paste(_to_pil(target, scale), (0, 0))
        pair.paste(recon.resize((recon.width * scale, recon.height * scale), Image.NEAREST), (recon.width * scale, 0))
        ImageDraw.Draw(pair).text((4, recon.height * scale + 1), f"{row.psnr:.1f} dB", fill="black")
        tiles.append(pair)
    return _grid(tiles, cols=4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=Path("demo-out"), help="a `project` run with --save-reconstructions")
    ap.add_argument("--generator", default="celeba64")
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--samples-only", action="store_true", help="only the samples figure (no run needed)")
    ap.add_argument(
        "--samples-name", default=None, help="file name of the samples figure (default GENERATOR_samples.png)"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    samples = args.out / (args.samples_name or f"{args.generator}_samples.png")
    samples_figure(args.generator, args.samples, args.seed, args.scale).save(samples)
    print(f"wrote {samples}")
    if not args.samples_only:
        pairs = args.out / "demo_reconstructions.png"
        reconstructions_figure(args.run, args.pairs, args.scale).save(pairs)
        print(f"wrote {pairs}")


if __name__ == "__main__":
    main()
