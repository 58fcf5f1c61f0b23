"""The picture a user judges an encoder by: CelebA `val` faces (people neither the generator nor the encoder
saw) | the reconstruction of each recipe, as `facebatch project --save-reconstructions` writes it.

    OMP_NUM_THREADS=2 python bench/encoder_sheet.py                         # docs/encoder_reconstructions.png
    python bench/encoder_sheet.py --recipes encoder,hybrid:25,hybrid:100,default:500 --faces 6
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "celeba10k"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="celeba64")
    ap.add_argument("--faces", type=int, default=8)
    ap.add_argument("--recipes", default="encoder,hybrid:25,hybrid:100", help="preset[:steps], comma-separated")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "encoder_reconstructions.png")
    a = ap.parse_args()
    from facebatch.pipeline.atomic import atomic_write_bytes
    from facebatch.pipeline.rundir import RunDir
    from facebatch.sheets import edit_grid

    split = pd.read_csv(DATA / "split.csv")
    ids = list(split[split.split == "val"].image_id[: a.faces])
    recipes = [r.split(":") for r in a.recipes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        faces = Path(tmp) / "faces"
        faces.mkdir()
        for i in ids:
            (faces / i).symlink_to((DATA / "images" / i).resolve())
        runs = []
        for preset, *steps in recipes:
            run = Path(tmp) / f"{preset}-{steps[0] if steps else 'preset'}"
            cmd = [sys.executable, "-m", "facebatch", "project", str(faces), "-g", a.generator, "-o", str(run),
                   "--preset", preset, "--save-reconstructions", "--workers", "0", "-q"]  # fmt: skip
            subprocess.run(cmd + (["--steps", steps[0]] if steps else []), check=True)
            runs.append(RunDir(run, "latents"))
        cells = [[faces / i, *[r.reconstruction(i) for r in runs]] for i in ids]
        labels = ["val face", *[f"{p} {s[0]}" if s else p for p, *s in recipes]]  # a column is 64 px wide
        title = f"{a.generator}: CelebA val faces | reconstructions (facebatch project --save-reconstructions)"
        atomic_write_bytes(a.out, edit_grid(title, labels, cells, row_labels=ids))
    print(a.out)


if __name__ == "__main__":
    main()
