"""Measure the attribute predictor on CelebA val and on demo-generator samples vs noise; write metrics.json.

    OMP_NUM_THREADS=1 PYTHONPATH=. python models/celeba-attrs/evaluate.py \
        --predictor models/celeba-attrs/celeba-attrs.safetensors --out models/celeba-attrs/metrics.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))


def noise_images(kind: str, n: int, seed: int, size: int = 64) -> torch.Tensor:
    """'uniform': i.i.d. pixels in [-1, 1]; 'smooth': 8x8 uniform noise, bicubic-upsampled (colour blobs)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "uniform":
        return torch.rand(n, 3, size, size, generator=gen) * 2 - 1
    low = torch.rand(n, 3, 8, 8, generator=gen) * 2 - 1
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


@torch.no_grad()
def test_protocol(predictor, generator: Path) -> dict:
    """Exactly what tests/test_attributes_predictor.py does: 64 samples, then 64 uniform and 64 smooth noise images."""
    from facebatch.nets.checkpoints import load_networks

    G = load_networks(generator, with_d=False).G
    gen = torch.Generator().manual_seed(0)
    samples = G(torch.randn(64, G.z_dim, generator=gen), None, noise_mode="const").clamp(-1, 1)
    noise = torch.rand(64, 3, 64, 64, generator=gen) * 2 - 1
    smooth = F.interpolate(torch.rand(64, 3, 8, 8, generator=gen) * 2 - 1, size=64, mode="bicubic").clamp(-1, 1)
    m = predictor.index("Male")
    return {
        name: confident(predictor(x)[:, m])
        for name, x in (("generator", samples), ("uniform_noise", noise), ("smooth_noise", smooth))
    }


@torch.no_grad()
def generator_samples(path: Path, n: int, seed: int, batch: int = 50) -> torch.Tensor:
    from facebatch.nets.checkpoints import load_networks

    G = load_networks(path, with_d=False).G
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=gen)
    return torch.cat([G(z[i : i + batch], None, noise_mode="const").clamp(-1, 1) for i in range(0, n, batch)])


@torch.no_grad()
def probs_of(predictor, images: torch.Tensor, batch: int = 250) -> torch.Tensor:
    return torch.cat([predictor(images[i : i + batch]) for i in range(0, len(images), batch)])


def confident(p: torch.Tensor) -> float:
    return round(float(((p < 0.1) | (p > 0.9)).float().mean()), 4)


def main() -> None:
    from sklearn.metrics import roc_auc_score
    from train import load_cache, to_float

    from facebatch.nets.attributes import load_predictor

    ap = argparse.ArgumentParser()
    ap.add_argument("--predictor", type=Path, default=HERE / "celeba-attrs.safetensors")
    ap.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "celeba10k")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/celeba64_attrs_cache.pt"))
    ap.add_argument(
        "--generator", type=Path, default=REPO.parent / "shared" / "models" / "celeba64" / "celeba64.safetensors"
    )
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "metrics.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    predictor = load_predictor(args.predictor)
    data = load_cache(args.data_root, args.cache, 64)
    val = [i for i, s in enumerate(data["split"]) if s == "val"]
    images = to_float(data["images"][val])
    labels = data["attrs"][val].numpy()
    probs = probs_of(predictor, images).numpy()
    table = {}
    for j, name in enumerate(predictor.attributes):
        y = labels[:, j]
        auroc = roc_auc_score(y, probs[:, j]) if 0 < y.sum() < len(y) else float("nan")
        table[name] = {
            "val_positives": int(y.sum()),
            "auroc": round(float(auroc), 4),
            "accuracy": round(float(((probs[:, j] > 0.5) == y).mean()), 4),
            "majority_accuracy": round(float(max(y.mean(), 1 - y.mean())), 4),
        }
    m = predictor.index("Male")
    pm, ym = probs[:, m], labels[:, m]
    conf = (pm < 0.1) | (pm > 0.9)
    # the subset the tests use: the first 64 val images in attributes.csv order
    sub = slice(0, 64)
    subset = {
        name: round(float(roc_auc_score(labels[sub, predictor.index(name)], probs[sub, predictor.index(name)])), 4)
        for name in ("Male", "Smiling")
    }

    sources = {
        "generator": generator_samples(args.generator, args.samples, args.seed),
        "uniform_noise": noise_images("uniform", args.samples, args.seed),
        "smooth_noise": noise_images("smooth", args.samples, args.seed),
    }
    generated = {}
    for name, imgs in sources.items():
        p = probs_of(predictor, imgs)[:, m]
        generated[name] = {
            "n": len(imgs),
            "confident_male_call": confident(p),
            "male_rate": round(float((p > 0.5).float().mean()), 4),
            "confident_male_call_first64": confident(p[:64]),
            "mean_p_male": round(float(p.mean()), 4),
        }
    metrics = {
        "predictor": args.predictor.name,
        "predictor_sha256": hashlib.sha256(args.predictor.read_bytes()).hexdigest(),
        "val_images": len(val),
        "mean_auroc": round(float(np.nanmean([t["auroc"] for t in table.values()])), 4),
        "mean_accuracy": round(float(np.mean([t["accuracy"] for t in table.values()])), 4),
        "attributes": table,
        "male_confident_fraction": round(float(conf.mean()), 4),
        "male_accuracy_when_confident": round(float(((pm[conf] > 0.5) == ym[conf]).mean()), 4),
        "male_accuracy_all": round(float(((pm > 0.5) == ym).mean()), 4),
        "first64_val_auroc": subset,
        "test_protocol_64_confident_male_call": test_protocol(predictor, args.generator),
        "generated": {
            "generator_file": str(args.generator.name),
            "generator_sha256": hashlib.sha256(args.generator.read_bytes()).hexdigest(),
            "seed": args.seed,
            "z": "torch.randn(n, z_dim, generator=manual_seed(seed)), noise_mode=const",
            **generated,
        },
    }
    args.out.write_text(json.dumps(metrics, indent=1) + "\n")
    print("| attribute | val positives | AUROC | accuracy @ 0.5 | majority-class accuracy |")
    print("|---|---:|---:|---:|---:|")
    for name, t in table.items():
        print(
            f"| {name} | {t['val_positives']} | {t['auroc']:.3f} | {t['accuracy']:.3f} | {t['majority_accuracy']:.3f} |"
        )
    print(json.dumps({k: v for k, v in metrics.items() if k != "attributes"}, indent=1))


if __name__ == "__main__":
    main()
