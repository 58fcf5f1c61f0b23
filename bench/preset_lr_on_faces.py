"""The default preset's lr, chosen on real faces: Image2StyleGAN's constant lr 0.01 against the NVlabs
schedule (peak 0.1, 5 % ramp-up, 25 % cosine ramp-down), both with the default preset's loss and steps,
on the last `--images` `train` faces of split.csv (never `val`; the boundary fits use others), celeba64.

    OMP_NUM_THREADS=1 python bench/preset_lr_on_faces.py --images 4 --steps 500
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from facebatch import load_generator
from facebatch import project as project_images

VARIANTS = {
    "lr 0.01 constant": {"lr": 0.01, "lr_rampup": 0.0, "lr_rampdown": 0.0},
    "lr 0.1 ramps": {"lr": 0.1, "lr_rampup": 0.05, "lr_rampdown": 0.25},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/celeba10k"))
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--steps", type=int, default=500)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with open(args.data / "split.csv", newline="") as fh:
        train = [r["image_id"] for r in csv.DictReader(fh) if r["split"] == "train"][-args.images :]
    files = [args.data / "images" / name for name in train]
    nets = load_generator("celeba64")
    for label, overrides in VARIANTS.items():
        t0 = time.time()
        frame = project_images(files, nets, preset="default", overrides={**overrides, "steps": args.steps}).frame
        print(
            f"{label}: {args.steps} steps, {len(files)} faces: PSNR {frame.psnr.mean():.2f} dB, "
            f"SSIM {frame.ssim.mean():.3f}, ST-LPIPS {frame.perceptual.mean():.4f} ({time.time() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
