"""Train the built-in face CLIP (`celeba-clip`): a tiny open_clip CLIP on CelebA faces at 64 px, on CPU.

open_clip's own classes and loss: `open_clip.CLIP(embed_dim, vision_cfg, text_cfg)` and `open_clip.ClipLoss`,
the bundled `SimpleTokenizer` (offline) with a short context. Captions are composed from the 40 CelebA
attributes of each image: a template ("a photo of {}", ...) around a subject phrase built from a random
subset of the true attributes ("a young smiling woman with blond hair and eyeglasses"); a few captions carry
an absent attribute in negated form ("... without eyeglasses") and a few are the bare "a photo of a person",
so that caption is a neutral reference for zero-shot prompts.

Data: ../shared/data/celeba10k, split == train only (val is read by evaluate.py alone); 5% of the train
identities are held out to print a zero-shot AUROC while training (no choice is made on it: the last epoch is
saved). Images go through facebatch's file loader, `facebatch.pipeline.images.load_image(path, 64)` (centre
square crop + Lanczos), the framing the `celeba64` generator was trained on, cached once as uint8 (the cache
of models/celeba-attrs/train.py, same format). Augmentation: x-flip and up to +-3 px translation.

    OMP_NUM_THREADS=1 PYTHONPATH=. python models/celeba-clip/train.py --out models/celeba-clip/celeba-clip.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# The caption templates, also stored in the file: `Clip.embed_prompt` wraps a prompt in each and averages.
TEMPLATES = (
    "a photo of {}",
    "a close-up photo of {}",
    "a portrait of {}",
    "a face of {}",
    "a cropped photo of {}",
    "{}",
)

# Attributes said as an adjective before the noun, and their negation (None: never negated).
ADJECTIVES = {
    "Smiling": ("smiling", "serious"),
    "Young": ("young", "old"),
    "Bald": ("bald", None),
    "Chubby": ("chubby", None),
    "Attractive": ("attractive", None),
    "Pale_Skin": ("pale", None),
}
# Attributes said as "with X", and their negated form (None: never negated).
WITH = {
    "Blond_Hair": ("blond hair", None),
    "Black_Hair": ("black hair", None),
    "Brown_Hair": ("brown hair", None),
    "Gray_Hair": ("gray hair", None),
    "Bangs": ("bangs", None),
    "Wavy_Hair": ("wavy hair", None),
    "Straight_Hair": ("straight hair", None),
    "Receding_Hairline": ("a receding hairline", None),
    "Eyeglasses": ("eyeglasses", "without eyeglasses"),
    "Wearing_Hat": ("a hat", "without a hat"),
    "Wearing_Earrings": ("earrings", None),
    "Wearing_Necklace": ("a necklace", None),
    "Wearing_Necktie": ("a necktie", None),
    "Wearing_Lipstick": ("lipstick", None),
    "Heavy_Makeup": ("heavy makeup", None),
    "Mustache": ("a mustache", "without a mustache"),
    "Goatee": ("a goatee", None),
    "Sideburns": ("sideburns", None),
    "5_o_Clock_Shadow": ("stubble", None),
    "Big_Nose": ("a big nose", None),
    "Pointy_Nose": ("a pointy nose", None),
    "Big_Lips": ("big lips", None),
    "Arched_Eyebrows": ("arched eyebrows", None),
    "Bushy_Eyebrows": ("bushy eyebrows", None),
    "Narrow_Eyes": ("narrow eyes", None),
    "Bags_Under_Eyes": ("bags under the eyes", None),
    "High_Cheekbones": ("high cheekbones", None),
    "Oval_Face": ("an oval face", None),
    "Double_Chin": ("a double chin", None),
    "Rosy_Cheeks": ("rosy cheeks", None),
    "Mouth_Slightly_Open": ("an open mouth", None),
}
# No_Beard is said the other way round: a beard when the attribute is absent.
BEARD = ("a beard", "without a beard")
# How often a present attribute is mentioned: the salient ones (what zero-shot users ask for) often.
SALIENT = {
    "Smiling": 0.75,
    "Male": 0.75,
    "Young": 0.5,
    "Eyeglasses": 0.9,
    "Blond_Hair": 0.8,
    "Black_Hair": 0.6,
    "Gray_Hair": 0.8,
    "Bald": 0.9,
    "Wearing_Hat": 0.9,
    "Mustache": 0.8,
    "Goatee": 0.7,
    "No_Beard": 0.7,
    "Wearing_Lipstick": 0.5,
    "Bangs": 0.5,
}
OTHER = 0.25  # the rest
NEGATE = 0.06  # chance per negatable absent attribute of being said in negated form
NEUTRAL = 0.05  # chance of the bare caption "a photo of a person"
MAX_WITH = 4  # at most this many "with" phrases (keeps captions under the context length)


def caption(attrs: dict[str, bool], rng: random.Random) -> str:
    """One caption for an image with these attributes (name -> present)."""
    if rng.random() < NEUTRAL:
        return "a photo of a person"
    adjectives, withs, withouts = [], [], []
    for name, (pos, neg) in ADJECTIVES.items():
        if attrs[name] and rng.random() < SALIENT.get(name, OTHER):
            adjectives.append(pos)
        elif not attrs[name] and neg and rng.random() < (0.35 if name == "Young" else NEGATE):
            adjectives.append(neg)
    for name, (pos, neg) in WITH.items():
        if attrs[name] and rng.random() < SALIENT.get(name, OTHER):
            withs.append(pos)
        elif not attrs[name] and neg and rng.random() < NEGATE:
            withouts.append(neg)
    if not attrs["No_Beard"] and rng.random() < SALIENT["No_Beard"]:
        withs.append(BEARD[0])
    elif attrs["No_Beard"] and attrs["Male"] and rng.random() < NEGATE:
        withouts.append(BEARD[1])
    rng.shuffle(adjectives)
    rng.shuffle(withs)
    withs = withs[:MAX_WITH]
    noun = ("man" if attrs["Male"] else "woman") if rng.random() < SALIENT["Male"] else "person"
    phrase = " ".join(adjectives + [noun])
    phrase = ("an " if phrase[0] in "aeiou" else "a ") + phrase
    if withs:
        phrase += " with " + (withs[0] if len(withs) == 1 else ", ".join(withs[:-1]) + " and " + withs[-1])
    if withouts:
        phrase += " " + rng.choice(withouts)
    template = rng.choice(TEMPLATES)
    if attrs["Blurry"] and rng.random() < OTHER:
        template = "a blurry photo of {}"
    return template.format(phrase)


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def augment(x: torch.Tensor, gen: torch.Generator, shift: int) -> torch.Tensor:
    """x-flip and a translation by up to `shift` px (edge padding); x in [-1, 1]."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if shift:
        padded = F.pad(x, (shift,) * 4, mode="replicate")
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen).tolist()
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen).tolist()
        x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    return x


def model_config(args) -> dict:
    if args.vision == "rn":
        vision = {"layers": [args.rn_blocks] * 4, "width": args.vision_width, "head_width": 64, "image_size": 64}
    else:
        vision = {
            "layers": args.vision_layers,
            "width": args.vision_width,
            "head_width": 32,
            "patch_size": 8,
            "image_size": 64,
        }
    text = {
        "context_length": args.context_length,
        "vocab_size": 49408,
        "width": args.text_width,
        "heads": args.text_width // 32,
        "layers": args.text_layers,
    }
    return {"embed_dim": args.embed_dim, "vision_cfg": vision, "text_cfg": text}


@torch.no_grad()
def zero_shot_auroc(model, tokenizer, images: torch.Tensor, labels: dict[str, np.ndarray], mean, std) -> dict:
    """Zero-shot AUROC on held-out images: softmax over ("a photo of a <adj> person" | "a photo of a person")."""
    from sklearn.metrics import roc_auc_score

    prompts = {
        "Smiling": "a smiling person",
        "Male": "a man",
        "Young": "a young person",
        "Eyeglasses": "a person with eyeglasses",
        "Blond_Hair": "a person with blond hair",
        "Wearing_Hat": "a person with a hat",
    }
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    feats = []
    for i in range(0, len(images), 256):
        x = (images[i : i + 256].float() / 255 - m) / s
        feats.append(F.normalize(model.encode_image(x).float(), dim=-1))
    feats = torch.cat(feats)

    def embed(phrase: str) -> torch.Tensor:
        t = F.normalize(model.encode_text(tokenizer([t.format(phrase) for t in TEMPLATES])).float(), dim=-1)
        return F.normalize(t.mean(0), dim=-1)

    neutral = embed("a person")
    out = {}
    for name, phrase in prompts.items():
        score = feats @ (embed(phrase) - neutral)
        y = labels[name]
        if 0 < y.sum() < len(y):
            out[name] = round(float(roc_auc_score(y, score.numpy())), 4)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "celeba10k")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/celeba64_attrs_cache.pt"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--vision", choices=["rn", "vit"], default="rn", help="ModifiedResNet or ViT/8 image tower")
    ap.add_argument("--vision-width", type=int, default=16)
    ap.add_argument("--vision-layers", type=int, default=4, help="ViT depth")
    ap.add_argument("--rn-blocks", type=int, default=2, help="ResNet bottleneck blocks per stage")
    ap.add_argument("--text-width", type=int, default=64)
    ap.add_argument("--text-layers", type=int, default=3)
    ap.add_argument("--embed-dim", type=int, default=128)
    ap.add_argument("--context-length", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100, help="linear warm-up steps before the cosine decay")
    ap.add_argument("--shift", type=int, default=3, help="max translation of the augmentation, px")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast on CPU")
    ap.add_argument("--holdout", type=float, default=0.05, help="fraction of train identities held out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit-steps", type=int, default=0, help="stop each epoch after this many steps (smoke tests)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    sys.path.insert(0, str(REPO))
    import open_clip

    from facebatch.nets.clip import write_clip

    t0 = time.time()
    attrs_train = load_module(REPO / "models" / "celeba-attrs" / "train.py", "celeba_attrs_train")
    data = attrs_train.load_cache(args.data_root, args.cache, 64)
    names = list(data["names"])
    train_idx = [i for i, s in enumerate(data["split"]) if s == "train"]
    identities = sorted({data["identity"][i] for i in train_idx})
    rng = random.Random(args.seed)
    held = set(rng.sample(identities, round(args.holdout * len(identities))))
    fit = torch.tensor([i for i in train_idx if data["identity"][i] not in held])
    hold = torch.tensor([i for i in train_idx if data["identity"][i] in held])
    images, attrs = data["images"], data["attrs"]
    rows = [dict(zip(names, map(bool, attrs[i].tolist()))) for i in range(len(attrs))]
    hold_labels = {n: attrs[hold, j].numpy().astype(int) for j, n in enumerate(names)}
    print(f"data: {len(fit)} fit + {len(hold)} holdout images (train split only), {time.time() - t0:.0f}s", flush=True)

    cfg = model_config(args)
    model = open_clip.CLIP(**cfg)
    tokenizer = open_clip.SimpleTokenizer(context_length=args.context_length)
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the [-1, 1] images as they are
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{json.dumps(cfg)}: {n_params / 1e6:.2f}M parameters", flush=True)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embedding" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    steps_per_epoch = len(fit) // args.batch
    if args.limit_steps:
        steps_per_epoch = min(steps_per_epoch, args.limit_steps)
    total_steps = args.epochs * steps_per_epoch

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        return 0.5 * args.lr * (1 + math.cos(math.pi * (step - args.warmup) / max(1, total_steps - args.warmup)))

    loss_fn = open_clip.ClipLoss()
    gen = torch.Generator().manual_seed(args.seed)
    caption_rng = random.Random(args.seed + 1)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    history = []
    step = 0
    t_train = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = fit[torch.randperm(len(fit), generator=gen)]
        total = 0.0
        for k in range(steps_per_epoch):
            idx = order[k * args.batch : (k + 1) * args.batch]
            x = augment(images[idx].float() / 127.5 - 1, gen, args.shift)
            x = ((x + 1) / 2 - m) / s
            texts = tokenizer([caption(rows[i], caption_rng) for i in idx.tolist()])
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                img_f, txt_f, scale = model(x, texts)
            loss = loss_fn(img_f.float(), txt_f.float(), scale.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            total += loss.item()
            step += 1
            if step % 20 == 0:
                print(
                    f"epoch {epoch} step {step}/{total_steps} loss {total / (k + 1):.4f} "
                    f"scale {model.logit_scale.exp().item():.1f} {time.time() - t_train:.0f}s",
                    flush=True,
                )
        model.eval()
        hold_auroc = zero_shot_auroc(model, tokenizer, images[hold], hold_labels, mean, std)
        history.append(
            {
                "epoch": epoch,
                "loss": round(total / steps_per_epoch, 5),
                "holdout_zero_shot_auroc": hold_auroc,
                "elapsed_s": round(time.time() - t_train, 1),
            }
        )
        print(json.dumps(history[-1]), flush=True)

    split_sha = hashlib.sha256((args.data_root / "split.csv").read_bytes()).hexdigest()
    extra = {
        "templates": list(TEMPLATES),
        "mean": list(mean),
        "std": list(std),
        "attributes_order": names,
        "training": {
            "data": "CelebA img_align_celeba, ../shared/data/celeba10k split=train (identity-disjoint from val); "
            "CelebA licence: non-commercial research use only",
            "split_csv_sha256": split_sha,
            "fit_images": len(fit),
            "holdout_images": len(hold),
            "epochs": args.epochs,
            "steps": step,
            "batch": args.batch,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "warmup": args.warmup,
            "bf16_autocast": args.bf16,
            "seed": args.seed,
            "threads": args.threads,
            "train_seconds": round(time.time() - t_train, 1),
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "preprocessing": "facebatch.pipeline.images.load_image(path, 64): centre square crop + Lanczos, [-1, 1]",
            "augmentation": f"x-flip, +-{args.shift} px translation (edge padding)",
            "captions": "models/celeba-clip/train.py caption(): template + attribute phrase",
            "history": history,
        },
    }
    write_clip(args.out, model.eval(), cfg, extra=extra, half=True)
    size = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size:.1f} MB) in {time.time() - t0:.0f}s total", flush=True)


if __name__ == "__main__":
    main()
