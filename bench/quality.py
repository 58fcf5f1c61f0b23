"""Quality of facebatch on real faces with the built-in celeba64 generator: one table per question.

Everything runs through facebatch's own functions (``facebatch.project``, the score metrics, the
boundary fit and ``edit_latents``), so the figures are what a user of the commands gets.

- inversion: PSNR / SSIM / ST-LPIPS (stlpips-vgg) and seconds per image of real faces and of G's own
  samples (saved as 8-bit PNGs, as a fake would be: the representable ceiling), per preset and step
  count; the mean-face baselines (mean image of 1,000 train faces; G's w_avg render, where projection starts);
- fake detection: G's samples (positive) vs real faces, every score, AUROC / AP with bootstrap 95 % CIs;
- anomaly detection: ../shared/data/nonfaces (positive) vs real faces, AUROC per score;
- boundaries: Smiling, Male, Young, Eyeglasses, Blond_Hair, Bald fitted (i) on projected `train` faces
  with their CelebA labels and (ii) on sampled w labelled by the celeba-attrs predictor; validation
  accuracy, then edits of the real faces' reconstructions at +-1.5 / +-3: how often the predictor's call
  flips toward the target and how much the other 39 attributes move (mean |dp|);
- the clip-aware pixel loss on / off, real faces and samples.

``--split val`` (the default) measures on `val`, the split nobody tunes on; ``--split train`` uses a
held-out slice of `train` (images never used by the boundary fits here) and is where preset choices are
made. The generator saw all of `train` while training, so `train` figures are a little optimistic.

    OMP_NUM_THREADS=1 python bench/quality.py --quick                     # ~5-10 min at 1 thread
    OMP_NUM_THREADS=1 python bench/quality.py --out bench/out/quality     # full settings: hours
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
ATTRS = ("Smiling", "Male", "Young", "Eyeglasses", "Blond_Hair", "Bald")
SCORES = ("psnr", "ssim", "perceptual", "l1", "mse", "d_residual", "anomaly_score")


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


class Sets:
    """The image sets, each an ordered list of files; a run uses a prefix of each list."""

    def __init__(self, split: str, seed: int, tmp: Path, G, sample_count: int):
        import pandas as pd

        root = DATA / "celeba10k"
        splits = pd.read_csv(root / "split.csv")
        rng = np.random.default_rng(seed)
        train = splits[splits.split == "train"].image_id.to_numpy()
        val = splits[splits.split == "val"].image_id.to_numpy()
        train = train[rng.permutation(len(train))]
        # train is cut in two: the first half feeds the boundary fits, the second is the held-out slice.
        self.fit_ids = list(train[: len(train) // 2])
        holdout = list(train[len(train) // 2 :])
        real = list(val[rng.permutation(len(val))]) if split == "val" else holdout
        self.files = {
            "real": [root / "images" / i for i in real],
            "holdout": [root / "images" / i for i in holdout],
            "fit": [root / "images" / i for i in self.fit_ids],
            "nonfaces": sorted(p for p in (DATA / "nonfaces").iterdir() if p.suffix.lower() in (".png", ".jpg")),
            "samples": self._write_samples(G, sample_count, tmp),
        }
        self.mean_face_ids = list(train[:1000])
        self.attributes = pd.read_csv(root / "attributes.csv").set_index("image_id")

    @staticmethod
    def _write_samples(G, n: int, tmp: Path) -> list[Path]:
        """G's samples (seeds 100000+, const noise) saved as 8-bit PNG, as any fake image is."""
        import torch

        from facebatch.nets.sampling import sample
        from facebatch.pipeline.images import save_image

        out = []
        for start in range(0, n, 64):
            seeds = list(range(100_000 + start, 100_000 + min(n, start + 64)))
            with torch.no_grad():
                _, _, img = sample(G, seeds)
            for s, im in zip(seeds, img):
                path = tmp / f"sample-{s}.png"
                save_image(im, path)
                out.append(path)
        return out


class Projections:
    """facebatch.project results keyed by (set, preset, steps, overrides); images are independent, so a
    larger request reuses the smaller one's rows and projects only the rest."""

    def __init__(self, nets, sets: Sets, batch: int, log, cache_dir: Path | None = None):
        self.nets, self.sets, self.batch, self.log = nets, sets, batch, log
        self.cache: dict = {}
        self.cache_dir = cache_dir  # rows kept on disk, so a rerun (or a bigger run) reuses them

    def _file(self, key) -> Path | None:
        import hashlib

        if self.cache_dir is None:
            return None
        return self.cache_dir / (hashlib.sha256(repr(key).encode()).hexdigest()[:20] + ".pkl")

    def get(self, kind: str, preset: str, steps: int, n: int, **overrides):
        import pandas as pd

        from facebatch.invert.presets import parse_overrides
        from facebatch.public import project as project_images

        # "default:lr=0.03:steps_note=..." = a preset with overrides, for trying variants side by side.
        preset, *pairs = preset.split(":")
        overrides = {**parse_overrides(pairs), **overrides}
        key = (kind, preset, steps, tuple(sorted(overrides.items())))
        if key not in self.cache and self._file(key) is not None and self._file(key).is_file():
            self.cache[key] = pd.read_pickle(self._file(key))
        frame, ws = self.cache.get(key, (None, None))
        have = 0 if frame is None else len(frame)
        files = self.sets.files[kind][:n]
        if have < len(files):
            t0 = time.perf_counter()
            table = project_images(
                files[have:], self.nets, preset=preset, overrides={"steps": steps, **overrides}, batch_size=self.batch
            )
            self.log(
                f"  projected {len(files) - have} {kind} ({preset}, {steps} steps{', ' if overrides else ''}"
                f"{', '.join(f'{k}={v}' for k, v in overrides.items())}) in {time.perf_counter() - t0:.0f} s"
            )
            new_w = table.latent("w")
            frame = table.frame if frame is None else pd.concat([frame, table.frame], ignore_index=True)
            ws = new_w if ws is None else np.concatenate([ws, new_w])
            bad = frame[frame.status != "ok"]
            if len(bad):
                raise RuntimeError(f"projection errors: {bad[['image_id', 'error']].to_dict('records')}")
            self.cache[key] = (frame, ws)
            if self.cache_dir is not None:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                pd.to_pickle((frame, ws), self._file(key))
        return frame.iloc[: len(files)], ws[: len(files)]


def mean_face_baselines(nets, sets: Sets, real_files) -> dict:
    import torch

    from facebatch.invert.projector import w_stats
    from facebatch.invert.scores import score_pairs
    from facebatch.pipeline.images import load_image

    R = nets.G.img_resolution
    real = torch.stack([load_image(p, R)[0] for p in real_files])
    mean = torch.stack([load_image(DATA / "celeba10k" / "images" / i, R)[0] for i in sets.mean_face_ids]).mean(0)
    w_avg, _ = w_stats(nets.G)
    with torch.no_grad():
        avg_render = nets.G.synthesis(w_avg.repeat(1, nets.G.num_ws, 1), noise_mode="const")
    out = {}
    for name, img in (("mean train image", mean[None]), ("G(w_avg) render", avg_render)):
        s = score_pairs(real, img.expand_as(real), perceptual="stlpips-vgg")
        out[name] = {k: float(np.mean(s[k])) for k in ("psnr", "ssim", "perceptual")}
    return out


def clipped_fraction(files, R: int) -> float:
    import torch

    from facebatch.pipeline.images import load_image

    x = torch.stack([load_image(p, R)[0] for p in files])
    return float(((x <= -1 + 1 / 255) | (x >= 1 - 1 / 255)).float().mean())


def summarise(frame) -> dict:
    return {
        "n": int(len(frame)),
        "psnr": float(frame.psnr.mean()),
        "psnr_sd": float(frame.psnr.std(ddof=1)) if len(frame) > 1 else 0.0,
        "ssim": float(frame.ssim.mean()),
        "lpips": float(frame.perceptual.mean()),
        "s_per_image": float(frame.seconds.mean()),
    }


def detection(pos, neg, task: str, n_boot: int) -> dict:
    from facebatch.scoring.metrics import separation
    from facebatch.scoring.polarity import spec_for

    out = {}
    for name in SCORES:
        values = np.concatenate([pos[name].to_numpy(), neg[name].to_numpy()])
        if np.isnan(values).any():
            continue
        y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        out[name] = separation(y, spec_for(name, task).orient(values), n_resamples=n_boot, seed=0)
    return out


# -- boundaries ---------------------------------------------------------------------------------------------
def predict(nets, predictor, ws: np.ndarray, batch: int = 64) -> np.ndarray:
    """Predictor probabilities [N, 40] of G(ws) renders (const noise)."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(ws), batch):
            img = nets.G.synthesis(torch.from_numpy(np.ascontiguousarray(ws[i : i + batch])), noise_mode="const")
            out.append(predictor(img.clamp(-1, 1)).numpy())
    return np.concatenate(out)


def fit_all(ws: np.ndarray, labels: dict[str, np.ndarray], kind: str, spaces, num_ws: int, sha) -> dict:
    from facebatch.edit.fit import FitSettings, features, fit_boundary

    fitted = {}
    for space in spaces:
        settings = FitSettings(space=space)
        X = features(ws, space, list(range(num_ws)))
        for name, values in labels.items():
            try:
                fitted[(name, space)] = fit_boundary(name, X, values, kind, FitSettings(space=space), num_ws, sha)
            except Exception as exc:  # too few positives (Bald in a small set): report, go on
                fitted[(name, space)] = str(exc).splitlines()[0]
        del settings
    return fitted


def edit_effects(nets, predictor, boundaries: dict, ws: np.ndarray, strengths, names) -> list[dict]:
    from facebatch.edit.apply import edit_latents
    from facebatch.nets.attributes import CELEBA_ATTRIBUTES

    index = {a: i for i, a in enumerate(CELEBA_ATTRIBUTES)}
    base = predict(nets, predictor, ws)
    rows = []
    for (name, space), b in boundaries.items():
        row = {"attribute": name, "space": space}
        if isinstance(b, str):
            rows.append({**row, "error": b})
            continue
        m = b.info["metrics"]
        row["val_accuracy"] = m["val_accuracy"]
        row["val_balanced_accuracy"] = m["val_balanced_accuracy"]
        k = index[name]
        others = [i for i in range(len(CELEBA_ATTRIBUTES)) if i != k]
        for s in strengths:
            for sign in (1, -1):
                p = predict(nets, predictor, edit_latents(ws, b, sign * s))
                start = base[:, k] >= 0.5
                can = ~start if sign > 0 else start  # images whose call can flip toward the target
                flipped = (p[:, k] >= 0.5) != start
                tag = f"{'+' if sign > 0 else '-'}{s:g}"
                row[f"flip{tag}"] = float(flipped[can].mean()) if can.any() else float("nan")
                row[f"n_can{tag}"] = int(can.sum())
                row[f"dp{tag}"] = float((sign * (p[:, k] - base[:, k])).mean())
                row[f"other{tag}"] = float(np.abs(p[:, others] - base[:, others]).mean())
        rows.append(row)
    return rows


# -- tables -------------------------------------------------------------------------------------------------
def md_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return "nan" if np.isnan(v) else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def ci(d) -> str:
    return f"[{d[0]:.3f}, {d[1]:.3f}]" if d else "-"


def render_markdown(res: dict) -> str:
    a = res["settings"]
    out = [f"# facebatch quality ({res['generator']}, real = `{a['split']}`)", "", f"`{res['command']}`", ""]
    out += [f"{res['seconds']:.0f} s total at {a['threads']} thread(s).", ""]
    out += ["## Inversion", ""]
    rows = []
    for r in res["inversion"]:
        rows.append(
            [
                r["set"],
                r["preset"],
                r["steps"],
                r["n"],
                r["psnr"],
                r["psnr_sd"],
                r["ssim"],
                r["lpips"],
                r["s_per_image"],
            ]
        )
    out.append(md_table(["images", "preset", "steps", "n", "PSNR dB", "sd", "SSIM", "ST-LPIPS", "s / image"], rows))
    out += ["", "Baselines (no optimisation), on the same real images:", ""]
    out.append(
        md_table(
            ["baseline", "PSNR dB", "SSIM", "ST-LPIPS"],
            [[k, v["psnr"], v["ssim"], v["perceptual"]] for k, v in res["baselines"].items()],
        )
    )
    out += ["", "## Clip-aware pixel loss: off vs on", ""]
    out.append(
        f"Target pixels at the 8-bit limits: real {res['clipped']['real']:.3f}, samples "
        f"{res['clipped']['samples']:.3f}."
    )
    out.append("")
    rows = [
        [
            r["set"],
            r["preset"],
            r["steps"],
            r["n"],
            r["off"]["psnr"],
            r["on"]["psnr"],
            r["delta_psnr"],
            r["delta_psnr_sd"],
            r["off"]["lpips"],
            r["on"]["lpips"],
        ]
        for r in res["clip_fix"]
    ]
    out.append(
        md_table(
            [
                "images",
                "preset",
                "steps",
                "n",
                "PSNR off",
                "PSNR on",
                "mean dPSNR",
                "sd dPSNR",
                "LPIPS off",
                "LPIPS on",
            ],
            rows,
        )
    )
    for task, title in (
        ("fake", "Fake detection: G samples (positive) vs real"),
        ("anomaly", "Anomaly detection: nonfaces (positive) vs real faces"),
    ):
        d = res[task]
        out += ["", f"## {title} ({d['preset']}, {d['steps']} steps, {d['n_positive']} + {d['n_negative']})", ""]
        rows = [
            [
                k,
                v["auroc"]["value"],
                ci(v["auroc"]["ci95"]),
                v["average_precision"]["value"],
                ci(v["average_precision"]["ci95"]),
                v["average_precision"]["chance"],
            ]
            for k, v in d["scores"].items()
        ]
        out.append(md_table(["score", "AUROC", "95 % CI", "AP", "95 % CI", "AP chance"], rows))
    out += ["", "## Boundaries and edits", ""]
    b = res["boundaries"]
    out.append(
        f"Labels from (i) CelebA on {b['n_real']} projected `train` faces ({b['preset']}, {b['steps']} steps); "
        f"(ii) the celeba-attrs predictor on {b['n_samples']} sampled w"
        + (" (fewer than the 10k asked for a full run: --quick)" if b["n_samples"] < 10000 else "")
        + f". Edits of {b['n_edit']} real reconstructions; flip = share of the images whose predicted call "
        "was not the target that flip to it; dp = mean move of the target probability toward the target; "
        "other = mean |dp| of the other 39 attributes."
    )
    out.append("")
    st = a["strengths"]
    header = ["labels", "attribute", "space", "val acc", "val bal acc"]
    for s in st:
        header += [f"flip +{s:g}", f"flip -{s:g}", f"dp +{s:g}", f"dp -{s:g}", f"other +-{s:g}"]
    rows = []
    for src in ("real_labels", "predictor_labels"):
        for r in b[src]:
            if "error" in r:
                rows.append([src, r["attribute"], r["space"], r["error"]] + [""] * (len(header) - 4))
                continue
            row = [src, r["attribute"], r["space"], r["val_accuracy"], r["val_balanced_accuracy"]]
            for s in st:
                row += [
                    r[f"flip+{s:g}"],
                    r[f"flip-{s:g}"],
                    r[f"dp+{s:g}"],
                    r[f"dp-{s:g}"],
                    (r[f"other+{s:g}"] + r[f"other-{s:g}"]) / 2,
                ]
            rows.append(row)
    out.append(md_table(header, rows))
    return "\n".join(out) + "\n"


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default="celeba64")
    p.add_argument("--split", choices=("val", "train"), default="val", help="real faces: val, or held-out train")
    p.add_argument("--presets", default="fast,default", help="comma list; preset:key=value:... for a variant")
    p.add_argument(
        "--choose-on-train", action="store_true", help="also the inversion grid on held-out train faces (preset choice)"
    )
    p.add_argument("--fix-presets", default=None, help="presets of the clip-loss on/off rows (default: --presets)")
    p.add_argument("--steps", type=ints, default=ints("50,100,300,1000"))
    p.add_argument("--images", type=int, default=64, help="real faces and samples per inversion row")
    p.add_argument("--detect-preset", default="fast")
    p.add_argument("--detect-steps", type=int, default=100)
    p.add_argument("--detect-images", type=int, default=300, help="per class (real / samples) for fake detection")
    p.add_argument("--nonfaces", type=int, default=33)
    p.add_argument("--fix-steps", type=int, default=100, help="step count of the clip-loss on/off rows")
    p.add_argument("--fit-images", type=int, default=1000, help="projected train faces for label boundaries")
    p.add_argument("--fit-samples", type=int, default=10000, help="predictor-labelled samples")
    p.add_argument("--edit-images", type=int, default=100)
    p.add_argument("--strengths", type=floats, default=floats("1.5,3"))
    p.add_argument("--spaces", default="w,wplus,layer", help="spaces of the real-label boundaries")
    p.add_argument("--cache", type=Path, help="keep projection rows here and reuse them (same generator and seed)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="small sizes: ~5-10 min at 1 thread")
    p.add_argument("--out", default="bench/out/quality", help="writes OUT.json and OUT.md")
    a = p.parse_args()
    if a.quick:
        a.presets, a.steps, a.images, a.fix_presets = "fast,default", [30], 8, "fast"
        a.detect_steps, a.detect_images, a.nonfaces, a.fix_steps = 30, 16, 8, 30
        a.fit_images, a.fit_samples, a.edit_images, a.spaces, a.bootstrap = 32, 2000, 8, "w", 200
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    command = shlex.join([sys.executable, *sys.argv])
    print(f"command: {command}", flush=True)

    from facebatch.nets.attributes import load_predictor
    from facebatch.nets.registry import builtin_path
    from facebatch.public import load_generator

    nets = load_generator(a.generator)
    nets.G.eval().requires_grad_(False)
    predictor = load_predictor(builtin_path("celeba-attrs/celeba-attrs.safetensors"))
    tmp = Path(tempfile.mkdtemp(prefix="fb-quality-"))
    n_samples = max(a.images, a.detect_images)
    sets = Sets(a.split, a.seed, tmp, nets.G, n_samples)
    proj = Projections(nets, sets, a.batch_size, lambda m: print(m, flush=True), a.cache)
    R = nets.G.img_resolution
    presets = a.presets.split(",")
    res: dict = {"command": command, "generator": a.generator, "settings": {**vars(a), "presets": presets}}

    # Inversion, with the detection configuration first so its rows are reused.
    inv = []
    for preset in presets:
        for steps in a.steps:
            for kind in ("real", "samples") + (("holdout",) if a.choose_on_train else ()):
                frame, _ = proj.get(kind, preset, steps, a.images)
                inv.append({"set": kind, "preset": preset, "steps": steps, **summarise(frame)})
                print(f"inversion {kind} {preset} {steps}: {inv[-1]}", flush=True)
    res["inversion"] = inv
    res["baselines"] = mean_face_baselines(nets, sets, sets.files["real"][: a.images])

    # The clip-aware pixel loss: off vs on, the same images, seeds and settings.
    res["clipped"] = {k: clipped_fraction(sets.files[k][: a.images], R) for k in ("real", "samples")}
    fix = []
    for preset in (a.fix_presets or a.presets).split(","):
        for kind in ("real", "samples"):
            on, _ = proj.get(kind, preset, a.fix_steps, a.images)
            off, _ = proj.get(kind, preset, a.fix_steps, a.images, clip_aware_mse=False)
            d = on.psnr.to_numpy() - off.psnr.to_numpy()
            fix.append(
                {
                    "set": kind,
                    "preset": preset,
                    "steps": a.fix_steps,
                    "n": len(on),
                    "on": summarise(on),
                    "off": summarise(off),
                    "delta_psnr": float(d.mean()),
                    "delta_psnr_sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                }
            )
            print(f"clip fix {kind} {preset}: {fix[-1]['delta_psnr']:+.2f} dB", flush=True)
    res["clip_fix"] = fix

    # Detection.
    real, real_ws = proj.get("real", a.detect_preset, a.detect_steps, a.detect_images)
    fake, _ = proj.get("samples", a.detect_preset, a.detect_steps, a.detect_images)
    res["fake"] = {
        "preset": a.detect_preset,
        "steps": a.detect_steps,
        "n_positive": len(fake),
        "n_negative": len(real),
        "scores": detection(fake, real, "fake", a.bootstrap),
    }
    odd, _ = proj.get("nonfaces", a.detect_preset, a.detect_steps, a.nonfaces)
    res["anomaly"] = {
        "preset": a.detect_preset,
        "steps": a.detect_steps,
        "n_positive": len(odd),
        "n_negative": len(real),
        "scores": detection(odd, real, "anomaly", a.bootstrap),
    }
    print("detection done", flush=True)

    # Boundaries: (i) CelebA labels of projected train faces, (ii) predictor labels of sampled w.
    num_ws, sha = nets.G.num_ws, getattr(nets, "sha256", None)
    fit_frame, fit_ws = proj.get("fit", a.detect_preset, a.detect_steps, a.fit_images)
    attrs = sets.attributes.loc[[Path(i).name for i in fit_frame.image_id]]
    real_labels = {n: (attrs[n].to_numpy() > 0).astype(float) for n in ATTRS}
    spaces = a.spaces.split(",")
    b_real = fit_all(fit_ws, real_labels, "binary", spaces, num_ws, sha)
    from facebatch.nets.attributes import CELEBA_ATTRIBUTES
    from facebatch.nets.sampling import z_from_seeds

    with torch.no_grad():
        w = nets.G.mapping(z_from_seeds(range(a.fit_samples), nets.G.z_dim))[:, :1].numpy()
    ws_samples = np.repeat(w, num_ws, axis=1)
    probs = predict(nets, predictor, ws_samples)
    logits = np.log(np.clip(probs, 1e-6, 1)) - np.log(np.clip(1 - probs, 1e-6, 1))
    pred_labels = {n: logits[:, CELEBA_ATTRIBUTES.index(n)] for n in ATTRS}
    # Sampled codes are one w tiled over the layers, so wplus / layer fits would only spread the w fit.
    b_pred = fit_all(ws_samples, pred_labels, "continuous", ["w"], num_ws, sha)
    edit_ws = real_ws[: a.edit_images]
    res["boundaries"] = {
        "preset": a.detect_preset,
        "steps": a.detect_steps,
        "n_real": len(fit_ws),
        "n_samples": a.fit_samples,
        "n_edit": len(edit_ws),
        "positives_real": {n: int(v.sum()) for n, v in real_labels.items()},
        "real_labels": edit_effects(nets, predictor, b_real, edit_ws, a.strengths, ATTRS),
        "predictor_labels": edit_effects(nets, predictor, b_pred, edit_ws, a.strengths, ATTRS),
    }
    res["seconds"] = time.perf_counter() - t_start
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps(res, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    )
    md = render_markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
