"""Fit the editing boundaries shipped with celeba64, the InterFaceGAN way: no human labels.

    OMP_NUM_THREADS=1 python models/celeba64/make_boundaries.py --work runs/celeba64-boundaries

runs the real CLI, each step resumable (rerun the same command after an interruption):

1. `facebatch sample -g celeba64 -n 20000 --no-images`            W codes of seeds 0..19999 (mapping only)
2. `facebatch label SAMPLES --predictor celeba-attrs`              renders each latent, 40 CelebA probabilities
3. derive `labels.csv`: the shipped names, oriented (age = 1 - p(Young), so + is older)
4. `facebatch fit-boundaries labels.csv --latents SAMPLES --chosen-ratio 0.1`  -> models/celeba64/boundaries.json

Settings: `--space w` (the default: for `sample` latents it is exactly the W code, and it recovered
planted directions best); `--chosen-ratio 0.1`: the probabilities are continuous scores, and with
20,000 samples InterFaceGAN's 0.02 keeps only 400 per side (280 to train a 256-d SVM); 0.1 keeps
2,000 per side (the validation accuracies of both are in the model card).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

from facebatch.edit.boundaries_io import CELEBA_ALIASES

HERE = Path(__file__).resolve().parent

# shipped name -> (CelebA attribute, sign): sign -1 fits on 1 - p, so + means "more of the shipped name".
# facebatch's own alias table, so that `--attr Smiling` finds `smile`, is the same mapping read backwards.
BOUNDARIES = {shipped: (celeba, sign) for celeba, (shipped, sign) in CELEBA_ALIASES.items()}


def facebatch(*args: str) -> None:
    cmd = [sys.executable, "-m", "facebatch", *args]
    print("+ facebatch", " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def derive(probs_csv: Path, labels_csv: Path) -> None:
    """The shipped names from the CelebA columns; an empty cell (unlabelled image) stays empty."""
    probs = pd.read_csv(probs_csv)
    out = pd.DataFrame({"image_id": probs["image_id"]})
    for name, (attr, sign) in BOUNDARIES.items():
        out[name] = probs[attr] if sign > 0 else 1.0 - probs[attr]
    out.to_csv(labels_csv, index=False, float_format="%.6g")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", "-g", default="celeba64", help="The generator (a candidate file when refreshing).")
    ap.add_argument("--work", type=Path, default=Path("runs/celeba64-boundaries"), help="Working folder.")
    ap.add_argument("-n", type=int, default=20000, help="Samples (seeds 0..n-1).")
    ap.add_argument("--chosen-ratio", default="0.1")
    ap.add_argument("--out", type=Path, default=HERE / "boundaries.json")
    ap.add_argument("--threads", type=int, default=1, help="Torch threads (label runs in this process).")
    args = ap.parse_args()
    work = args.work
    samples, probs, labels = work / "samples", work / "celeba_probs.csv", work / "labels.csv"
    facebatch("sample", "-g", args.generator, "-n", str(args.n), "--seed", "0", "--no-images", "-o", str(samples), "-q")
    facebatch(
        "label", str(samples), "--predictor", "celeba-attrs", "-o", str(probs),
        "--workers", "0", "--threads-per-worker", str(args.threads), "--batch-size", "64",
    )  # fmt: skip
    derive(probs, labels)
    facebatch(
        "fit-boundaries", str(labels), "--latents", str(samples), "--out", str(args.out),
        "--chosen-ratio", args.chosen_ratio, "--space", "w", "--overwrite",
    )  # fmt: skip


if __name__ == "__main__":
    main()
