"""The recipe of the built-in `celeba64-encoder`: `facebatch encoder train` for celeba64 on its own samples plus
the CelebA `train` split (the people celeba64 was trained on; `val` stays unseen for measuring).

    OMP_NUM_THREADS=1 python models/celeba64-encoder/train.py --work runs/celeba64-encoder

Resumable (rerun the same command); writes models/celeba64-encoder/celeba64-encoder.safetensors when done,
its weights stored as float16 (12 MB instead of 24: the repository and a GPU call's 64 MiB both stay small).
The settings below are the ones the model card reports; bench/encoder.py measures the result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / ".." / "shared" / "data" / "celeba10k"
SETTINGS = dict(
    iters=2000,
    batch=32,
    real_batch=8,
    image_batch=8,
    image_every=2,
    lr=5e-4,
    perceptual_weight=0.8,
    delta_weight=2e-4,
    seed=0,
    snapshot_every=250,
)


def train_split_folder(work: Path) -> Path:
    """A folder of links to the `train` images: what `--real` reads."""
    folder = work / "real-train"
    folder.mkdir(parents=True, exist_ok=True)
    split = pd.read_csv(DATA / "split.csv")
    for name in split[split.split == "train"].image_id:
        link = folder / name
        if not link.exists():
            link.symlink_to((DATA / "images" / name).resolve())
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/celeba64-encoder"))
    ap.add_argument("--out", type=Path, default=HERE / "celeba64-encoder.safetensors")
    ap.add_argument("--iters", type=int, default=SETTINGS["iters"])
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    from facebatch.encoder.api import train_encoder_file

    real = train_split_folder(a.work)
    last = [0.0]

    def report(step: int, record: dict) -> None:
        if step % 50 == 0:
            parts = " ".join(f"{k} {v:.4f}" for k, v in record.items())
            print(f"step {step} {parts}", flush=True)
        last[0] = step

    result = train_encoder_file(
        "celeba64", out=a.out, real=real, work=a.work / "snapshots", device=a.device, overwrite=False,
        on_step=report, half=True, **{**SETTINGS, "iters": a.iters},
    )  # fmt: skip
    print(f"{result.iteration} steps, {result.images_seen} images; wrote {a.out}")


if __name__ == "__main__":
    main()
