"""Does NADA move what it was told to, and little else? celeba64 + the face CLIP, judged by celeba-attrs.

For each text pair, `facebatch nada` (the library call) shifts celeba64; then the same `--samples`
latents (z seeds 0.., truncation 0.7, constant noise) are rendered by the base and the shifted
generator and the attribute predictor `celeba-attrs` (trained on real photos, independent of CLIP)
scores both. Printed per pair: the target attribute's mean probability before / after and its
change, the mean |change| over the other 39 attributes, the largest other change, and the time
per NADA iteration. The texts are wrapped in the face CLIP's own caption templates ("a photo of
{}", ...), so "a person" -> "a smiling person" is "a photo of a person" -> "a photo of a smiling person".

    OMP_NUM_THREADS=1 python bench/nada_effect.py                   # both pairs, 300 iterations
    OMP_NUM_THREADS=1 python bench/nada_effect.py --iters 100 --pairs smiling
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facebatch import load_generator
from facebatch.domain_shift.api import run_nada
from facebatch.nets import predictors

PAIRS = {
    "smiling": ("a person", "a smiling person", "Smiling"),
    "blond": ("a person", "a person with blond hair", "Blond_Hair"),
    "eyeglasses": ("a person", "a person with eyeglasses", "Eyeglasses"),
}


@torch.no_grad()
def render(G, n: int, psi: float = 0.7) -> torch.Tensor:
    z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in range(n)])).float()
    ws = G.mapping(z, None, truncation_psi=psi)
    return torch.cat([G.synthesis(ws[i : i + 32], noise_mode="const") for i in range(0, n, 32)]).clamp(-1, 1)


def effect(base_probs: np.ndarray, shifted_probs: np.ndarray, names: list[str], attr: str) -> dict:
    delta = shifted_probs.mean(0) - base_probs.mean(0)
    i = names.index(attr)
    others = np.delete(np.abs(delta), i)
    j = int(np.argmax(np.abs(np.where(np.arange(len(names)) == i, 0, delta))))
    return {
        "before": float(base_probs[:, i].mean()),
        "after": float(shifted_probs[:, i].mean()),
        "delta": float(delta[i]),
        "others_mean_abs": float(others.mean()),
        "largest_other": (names[j], float(delta[j])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", default=["smiling", "blond"], choices=list(PAIRS))
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--clip", default="celeba-clip")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="keep the shifted generators and grids in this folder")
    a = ap.parse_args()
    torch.set_num_threads(1)
    nets = load_generator("celeba64")
    predictor = predictors.load(predictors.resolve_predictor("celeba-attrs"))
    names = list(predictor.names)
    base_probs = predictor.probs(render(nets.G, a.samples)).numpy()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"celeba64 {nets.sha256[:12]}, CLIP {a.clip}, {a.samples} samples (psi 0.7), {a.iters} iterations, batch 2")
    with tempfile.TemporaryDirectory() as tmp:
        folder = a.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for key in a.pairs:
            source, target, attr = PAIRS[key]
            t0 = time.perf_counter()
            result = run_nada(
                nets,
                source=source,
                target=target,
                out=folder / f"celeba64-{key}.safetensors",
                clips=[a.clip],
                iters=a.iters,
                seed=a.seed,
                overwrite=True,
            )
            per_iter = (time.perf_counter() - t0) / a.iters
            shifted = predictor.probs(render(result.G, a.samples)).numpy()
            e = effect(base_probs, shifted, names, attr)
            loss = np.asarray(result.losses)
            print(
                f"{source!r} -> {target!r} ({attr}): P {e['before']:.3f} -> {e['after']:.3f} "
                f"(change {e['delta']:+.3f}); other 39 attributes mean |change| {e['others_mean_abs']:.3f}, "
                f"largest {e['largest_other'][0]} {e['largest_other'][1]:+.3f}; directional loss "
                f"{loss[:10].mean():.3f} -> {loss[-10:].mean():.3f}; {per_iter:.3f} s/iteration",
                flush=True,
            )


if __name__ == "__main__":
    main()
