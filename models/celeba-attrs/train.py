"""Train the CelebA 40-attribute predictor (facebatch.nets.attributes) at 64 px on CPU.

Uses only split == train of ../shared/data/celeba10k; 10% of the train identities are held out to pick
the epoch (val is never read here; evaluate.py measures on it). Images go through exactly the loader
facebatch uses for files (facebatch.pipeline.images.load_image: centre square crop + Lanczos), cached
once as uint8.

    OMP_NUM_THREADS=1 python models/celeba-attrs/train.py --out models/celeba-attrs/celeba-attrs.safetensors
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]


def load_cache(data_root: Path, cache: Path, size: int) -> dict:
    """uint8 [N,3,size,size] images + bool [N,40] attributes + split + identity, built once with load_image."""
    if cache.is_file():
        data = torch.load(cache, weights_only=True)
        if data["images"].shape[-1] == size:
            return data
    from facebatch.pipeline.images import load_image

    rows = list(csv.DictReader((data_root / "attributes.csv").read_text().splitlines()))
    split = {r["image_id"]: r["split"] for r in csv.DictReader((data_root / "split.csv").read_text().splitlines())}
    names = [k for k in rows[0] if k not in ("image_id", "identity")]
    images = torch.empty(len(rows), 3, size, size, dtype=torch.uint8)
    for i, row in enumerate(rows):
        x, _ = load_image(data_root / "images" / row["image_id"], size)
        images[i] = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    data = {
        "ids": [r["image_id"] for r in rows],
        "names": names,
        "images": images,
        "attrs": torch.tensor([[int(r[n]) > 0 for n in names] for r in rows], dtype=torch.bool),
        "split": [split[r["image_id"]] for r in rows],
        "identity": [int(r["identity"]) for r in rows],
    }
    tmp = cache.with_name(cache.name + f".part-{os.getpid()}")
    torch.save(data, tmp)
    os.replace(tmp, cache)
    return data


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(127.5).sub_(1.0)


def augment(x: torch.Tensor, gen: torch.Generator, shift: int = 4, jitter: float = 0.15) -> torch.Tensor:
    """x-flip, translation by up to `shift` px (edge padding), brightness/contrast/saturation jitter. x in [-1,1]."""
    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if shift:
        size = x.shape[-1]
        padded = F.pad(x, (shift,) * 4, mode="replicate")
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(size))[:, None, :, None].expand(n, 3, size, size + 2 * shift)
        x = padded.gather(2, rows)
        cols = (dx[:, None] + torch.arange(size))[:, None, None, :].expand(n, 3, size, size)
        x = x.gather(3, cols)
    if jitter:

        def u():
            return 1 + jitter * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)

        x = x * u() + (u() - 1)  # contrast around 0 (mid grey) and brightness
        grey = x.mean(1, keepdim=True)
        x = grey + (x - grey) * u()  # saturation
    return x.clamp(-1, 1)


def mean_auroc(probs: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    scores = [
        roc_auc_score(labels[:, j], probs[:, j]) for j in range(labels.shape[1]) if 0 < labels[:, j].sum() < len(labels)
    ]
    return float(np.mean(scores))


@torch.no_grad()
def predict(net: torch.nn.Module, images: torch.Tensor, batch: int, bf16: bool) -> np.ndarray:
    net.eval()
    out = []
    for i in range(0, len(images), batch):
        x = to_float(images[i : i + batch]).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out.append(torch.sigmoid(net(x).float()))
    return torch.cat(out).numpy()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "celeba10k")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/celeba64_attrs_cache.pt"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--arch", default="resnet")
    ap.add_argument("--arch-kwargs", default='{"layers": [1, 1, 1, 1]}', type=json.loads)
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument(
        "--pos-weight",
        choices=["none", "sqrt"],
        default="none",
        help="sqrt: BCE pos_weight sqrt(neg/pos) clipped to [1, 10] (uncalibrates p=0.5; off by default)",
    )
    ap.add_argument(
        "--holdout", type=float, default=0.1, help="fraction of train identities held out to pick the epoch"
    )
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast on CPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit-steps", type=int, default=0, help="stop each epoch after this many steps (smoke tests)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    sys.path.insert(0, str(REPO))
    from facebatch.nets.attributes import CELEBA_ATTRIBUTES, AttributePredictor, count_parameters, save_predictor

    t0 = time.time()
    data = load_cache(args.data_root, args.cache, 64)
    assert tuple(data["names"]) == CELEBA_ATTRIBUTES, "attributes.csv columns are not the CelebA order"
    train_idx = [i for i, s in enumerate(data["split"]) if s == "train"]
    identities = sorted({data["identity"][i] for i in train_idx})
    rng = random.Random(args.seed)
    held = set(rng.sample(identities, round(args.holdout * len(identities))))
    fit = torch.tensor([i for i in train_idx if data["identity"][i] not in held])
    hold = torch.tensor([i for i in train_idx if data["identity"][i] in held])
    images, attrs = data["images"], data["attrs"].float()
    print(
        f"data: {len(fit)} fit + {len(hold)} holdout images (train split only), loaded in {time.time() - t0:.0f}s",
        flush=True,
    )

    predictor = AttributePredictor(args.arch, args.arch_kwargs, CELEBA_ATTRIBUTES, 64)
    net = predictor.net.to(memory_format=torch.channels_last)
    print(f"{args.arch} {args.arch_kwargs}: {count_parameters(net) / 1e6:.2f}M parameters", flush=True)
    pos = attrs[fit].mean(0)
    pos_weight = ((1 - pos) / pos.clamp_min(1e-3)).sqrt().clamp(1, 10) if args.pos_weight == "sqrt" else None
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )
    steps_per_epoch = len(fit) // args.batch
    if args.limit_steps:
        steps_per_epoch = min(steps_per_epoch, args.limit_steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    gen = torch.Generator().manual_seed(args.seed)
    best = (-1.0, 0, None)
    history = []
    t_train = time.time()
    for epoch in range(1, args.epochs + 1):
        net.train()
        order = fit[torch.randperm(len(fit), generator=gen)]
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * args.batch : (step + 1) * args.batch]
            x = augment(to_float(images[idx]), gen).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logits = net(x)
            loss = F.binary_cross_entropy_with_logits(logits.float(), attrs[idx], pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        hold_auroc = mean_auroc(predict(net, images[hold], 256, args.bf16), attrs[hold].numpy())
        history.append(
            {
                "epoch": epoch,
                "loss": round(total / steps_per_epoch, 5),
                "holdout_mean_auroc": round(hold_auroc, 5),
                "elapsed_s": round(time.time() - t_train, 1),
            }
        )
        print(json.dumps(history[-1]), flush=True)
        if hold_auroc > best[0]:
            best = (hold_auroc, epoch, copy.deepcopy(net.state_dict()))

    net.load_state_dict(best[2])
    predictor.net = net.to(memory_format=torch.contiguous_format).eval()
    predictor.training_info = {
        "data": "CelebA img_align_celeba, ../shared/data/celeba10k split=train (identity-disjoint from val); "
        "CelebA licence: non-commercial research use only",
        "fit_images": len(fit),
        "holdout_images": len(hold),
        "best_epoch": best[1],
        "holdout_mean_auroc": round(best[0], 5),
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "pos_weight": args.pos_weight,
        "bf16_autocast": args.bf16,
        "seed": args.seed,
        "threads": args.threads,
        "train_seconds": round(time.time() - t_train, 1),
        "torch": torch.__version__,
        "preprocessing": "facebatch.pipeline.images.load_image(path, 64): centre square crop + Lanczos, [-1, 1]",
        "augmentation": "x-flip, +-4 px translation (edge padding), brightness/contrast/saturation +-15%",
        "history": history,
    }
    save_predictor(args.out, predictor)
    print(
        f"wrote {args.out} (best epoch {best[1]}, holdout mean AUROC {best[0]:.4f}) in {time.time() - t0:.0f}s total",
        flush=True,
    )


if __name__ == "__main__":
    main()
