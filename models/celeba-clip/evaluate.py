"""Measure the face CLIP on CelebA val: zero-shot AUROC per attribute, image-text retrieval, and agreement with
the attribute predictor on demo-generator samples; write metrics.json.

Everything goes through the library path users get (`facebatch.nets.clip.load_clip` and the
`facebatch label --clip` predictor, `facebatch.nets.predictors.ClipPromptPredictor`): images read by
`load_image(path, 64)`, each prompt wrapped in the model's templates and averaged, the probability CLIP's
two-way softmax over (positive, negative).

    OMP_NUM_THREADS=1 PYTHONPATH=. python models/celeba-clip/evaluate.py \
        --clip models/celeba-clip/celeba-clip.safetensors --out models/celeba-clip/metrics.json
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

NEUTRAL = "a person"
# attribute -> (positive, negative): the caption vocabulary of train.py, against the neutral caption, or the
# opposite where the captions name one (Male, Young); No_Beard is the absence of a beard.
PROMPTS = {
    "5_o_Clock_Shadow": ("a person with stubble", NEUTRAL),
    "Arched_Eyebrows": ("a person with arched eyebrows", NEUTRAL),
    "Attractive": ("an attractive person", NEUTRAL),
    "Bags_Under_Eyes": ("a person with bags under the eyes", NEUTRAL),
    "Bald": ("a bald person", NEUTRAL),
    "Bangs": ("a person with bangs", NEUTRAL),
    "Big_Lips": ("a person with big lips", NEUTRAL),
    "Big_Nose": ("a person with a big nose", NEUTRAL),
    "Black_Hair": ("a person with black hair", NEUTRAL),
    "Blond_Hair": ("a person with blond hair", NEUTRAL),
    "Blurry": ("a blurry photo of a person", NEUTRAL),
    "Brown_Hair": ("a person with brown hair", NEUTRAL),
    "Bushy_Eyebrows": ("a person with bushy eyebrows", NEUTRAL),
    "Chubby": ("a chubby person", NEUTRAL),
    "Double_Chin": ("a person with a double chin", NEUTRAL),
    "Eyeglasses": ("a person with eyeglasses", NEUTRAL),
    "Goatee": ("a person with a goatee", NEUTRAL),
    "Gray_Hair": ("a person with gray hair", NEUTRAL),
    "Heavy_Makeup": ("a person with heavy makeup", NEUTRAL),
    "High_Cheekbones": ("a person with high cheekbones", NEUTRAL),
    "Male": ("a man", "a woman"),
    "Mouth_Slightly_Open": ("a person with an open mouth", NEUTRAL),
    "Mustache": ("a person with a mustache", NEUTRAL),
    "Narrow_Eyes": ("a person with narrow eyes", NEUTRAL),
    "No_Beard": (NEUTRAL, "a person with a beard"),
    "Oval_Face": ("a person with an oval face", NEUTRAL),
    "Pale_Skin": ("a pale person", NEUTRAL),
    "Pointy_Nose": ("a person with a pointy nose", NEUTRAL),
    "Receding_Hairline": ("a person with a receding hairline", NEUTRAL),
    "Rosy_Cheeks": ("a person with rosy cheeks", NEUTRAL),
    "Sideburns": ("a person with sideburns", NEUTRAL),
    "Smiling": ("a smiling person", NEUTRAL),
    "Straight_Hair": ("a person with straight hair", NEUTRAL),
    "Wavy_Hair": ("a person with wavy hair", NEUTRAL),
    "Wearing_Earrings": ("a person with earrings", NEUTRAL),
    "Wearing_Hat": ("a person with a hat", NEUTRAL),
    "Wearing_Lipstick": ("a person with lipstick", NEUTRAL),
    "Wearing_Necklace": ("a person with a necklace", NEUTRAL),
    "Wearing_Necktie": ("a person with a necktie", NEUTRAL),
    "Young": ("a young person", "an old person"),
}
# The same attributes written as whole sentences (the README's example form): the templates then wrap a sentence.
SENTENCES = {
    "Smiling": ("a photo of a smiling person", "a photo of a person"),
    "Male": ("a photo of a man", "a photo of a woman"),
    "Eyeglasses": ("a photo of a person with eyeglasses", "a photo of a person"),
    "Blond_Hair": ("a photo of a person with blond hair", "a photo of a person"),
}
# Negated prompts instead of the neutral caption, for the attributes trained with a negated form.
NEGATIONS = {
    "Smiling": ("a smiling person", "a serious person"),
    "Eyeglasses": ("a person with eyeglasses", "a person without eyeglasses"),
    "Wearing_Hat": ("a person with a hat", "a person without a hat"),
    "Mustache": ("a person with a mustache", "a person without a mustache"),
}


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def probs_of(pred, images: torch.Tensor, batch: int = 300) -> np.ndarray:
    return torch.cat([pred.probs(images[i : i + batch]) for i in range(0, len(images), batch)]).numpy()


def aurocs(clip, prompts: dict, images: torch.Tensor, labels: dict) -> dict:
    from sklearn.metrics import roc_auc_score

    from facebatch.nets.predictors import ClipPromptPredictor

    pred = ClipPromptPredictor(clip, [(n, p, q) for n, (p, q) in prompts.items()])
    probs = probs_of(pred, images)
    out = {}
    for j, name in enumerate(pred.names):
        y = labels[name]
        out[name] = round(float(roc_auc_score(y, probs[:, j])), 4) if 0 < y.sum() < len(y) else None
    return out


@torch.no_grad()
def retrieval(clip, images: torch.Tensor, captions: list[str]) -> dict:
    """R@1/5/10 both ways, one caption per image (exact-pair hits only; many captions are near-duplicates)."""
    img = torch.cat([clip.encode_images(images[i : i + 300]) for i in range(0, len(images), 300)])
    txt = clip.encode_texts(captions)
    sim = img @ txt.T
    n = len(images)
    target = torch.arange(n)

    def recall(s: torch.Tensor, k: int) -> float:
        top = s.topk(k, dim=1).indices
        return round(float((top == target[:, None]).any(1).float().mean()), 4)

    return {
        "pairs": n,
        "image_to_text": {f"R@{k}": recall(sim, k) for k in (1, 5, 10)},
        "text_to_image": {f"R@{k}": recall(sim.T, k) for k in (1, 5, 10)},
        "chance_R@1": round(1 / n, 5),
    }


@torch.no_grad()
def generator_agreement(clip, generator: str, predictor: str, n: int, seed: int) -> dict:
    """On `n` demo-generator samples: AUROC of the CLIP probability against the attribute predictor's p > 0.5."""
    from sklearn.metrics import roc_auc_score

    from facebatch.nets.attributes import load_predictor
    from facebatch.nets.checkpoints import load_networks
    from facebatch.nets.predictors import ClipPromptPredictor
    from facebatch.nets.registry import get

    G = load_networks(generator, with_d=False).G.eval()
    attrs = load_predictor(get(predictor).fetch())
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=gen)
    images = torch.cat([G(z[i : i + 50], None, noise_mode="const").clamp(-1, 1) for i in range(0, n, 50)])
    names = ["Smiling", "Male", "Young", "Eyeglasses", "Blond_Hair", "Black_Hair", "Wearing_Lipstick", "No_Beard"]
    teacher = torch.cat([attrs(images[i : i + 100]) for i in range(0, n, 100)]).numpy()
    pred = ClipPromptPredictor(clip, [(a, *PROMPTS[a]) for a in names])
    probs = probs_of(pred, images)
    out = {}
    for j, a in enumerate(names):
        y = teacher[:, attrs.index(a)] > 0.5
        out[a] = round(float(roc_auc_score(y, probs[:, j])), 4) if 0 < y.sum() < n else None
    return {"generator": generator, "predictor": predictor, "samples": n, "seed": seed, "auroc_vs_predictor": out}


def main() -> None:
    import pandas as pd

    from facebatch.nets.clip import load_clip
    from facebatch.pipeline.images import load_image

    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default=str(HERE / "celeba-clip.safetensors"))
    ap.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "celeba10k")
    ap.add_argument("--out", type=Path, default=HERE / "metrics.json")
    ap.add_argument("--generator", default="celeba64")
    ap.add_argument("--predictor", default="celeba-attrs")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()

    clip = load_clip(args.clip)
    split = pd.read_csv(args.data_root / "split.csv")
    table = pd.read_csv(args.data_root / "attributes.csv").set_index("image_id")
    ids = split[split.split == "val"].image_id.tolist()
    images = torch.stack([load_image(args.data_root / "images" / i, clip.image_size)[0] for i in ids])
    labels = {a: (table.loc[ids, a].to_numpy() > 0).astype(int) for a in PROMPTS}

    val = aurocs(clip, PROMPTS, images, labels)
    scored = [v for v in val.values() if v is not None]
    first300 = aurocs(clip, {a: PROMPTS[a] for a in ("Smiling", "Male")}, images[:300], labels_first(labels, 300))
    train = load_module(HERE / "train.py", "celeba_clip_train")
    rng = random.Random(args.seed)
    captions = [train.caption({a: bool(table.loc[i, a] > 0) for a in table.columns[1:]}, rng) for i in ids]
    metrics = {
        "clip": Path(args.clip).name if Path(args.clip).is_file() else str(args.clip),
        "clip_sha256": hashlib.sha256(Path(args.clip).read_bytes()).hexdigest() if Path(args.clip).is_file() else None,
        "split_csv_sha256": hashlib.sha256((args.data_root / "split.csv").read_bytes()).hexdigest(),
        "val_images": len(ids),
        "templates": list(clip.templates),
        "logit_scale": round(float(clip.model.logit_scale.exp()), 3),
        "zero_shot": {
            "prompts": {a: list(p) for a, p in PROMPTS.items()},
            "val_auroc": val,
            "val_mean_auroc": round(float(np.mean(scored)), 4),
            "val_first300_auroc": first300,
            "sentence_prompts": {a: list(p) for a, p in SENTENCES.items()},
            "val_auroc_sentence_prompts": aurocs(clip, SENTENCES, images, labels),
            "negated_prompts": {a: list(p) for a, p in NEGATIONS.items()},
            "val_auroc_negated_prompts": aurocs(clip, NEGATIONS, images, labels),
        },
        "retrieval_val": retrieval(clip, images, captions),
        "generator_samples": generator_agreement(clip, args.generator, args.predictor, args.samples, args.seed),
        "seconds": None,
    }
    metrics["seconds"] = round(time.time() - t0, 1)
    args.out.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics["zero_shot"]["val_auroc"]))
    print(f"mean {metrics['zero_shot']['val_mean_auroc']}; first 300: {first300}")
    print(json.dumps({k: metrics[k] for k in ("retrieval_val", "generator_samples")}))
    print(f"wrote {args.out} in {metrics['seconds']}s")


def labels_first(labels: dict, n: int) -> dict:
    return {a: y[:n] for a, y in labels.items()}


if __name__ == "__main__":
    main()
