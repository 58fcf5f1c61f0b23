"""Encoders against optimisation: quality, time per image, detection and edits (`encoder` / `hybrid` presets).

Everything runs through `facebatch.project` (read, encode or optimise, render, every score), so
seconds per image are what `facebatch project` costs per image, end to end, on this machine.

- quality: PSNR / SSIM / ST-LPIPS on `val` faces (people neither the generator nor the encoder saw)
  and on G's samples saved as 8-bit PNGs, for `encoder`, `hybrid` at several step counts and `fast`
  from w_avg, and on the `val` faces `default` from w_avg at several step counts;
- time to quality: the smallest `hybrid` step count whose mean PSNR and ST-LPIPS reach the
  `default` preset's at its full 500 steps, and its seconds per image against default's;
- detection: G's samples vs `val` faces (fake) and nonfaces vs faces (anomaly), AUROC with
  bootstrap 95 % intervals, every score of the `encoder` and `hybrid` runs;
- edits: the shipped boundaries on the `encoder` and the `default` latents of the `val` faces, share
  of calls that flip at strength 3 (models/celeba64/measure.py's measurement);
- the figure: PSNR and ST-LPIPS against seconds per image, one curve per recipe (docs/time_to_quality.png).

    OMP_NUM_THREADS=1 python bench/encoder.py --quick          # minutes: 8 faces, fewer step counts
    OMP_NUM_THREADS=1 python bench/encoder.py --out bench/out/encoder
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
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
QUALITY = ("psnr", "ssim", "perceptual")


def val_faces(n: int) -> list[Path]:
    split = pd.read_csv(DATA / "celeba10k" / "split.csv")
    return [DATA / "celeba10k" / "images" / i for i in split[split.split == "val"].image_id[:n]]


def sample_pngs(G, n: int, folder: Path, seed: int = 10_000) -> list[Path]:
    """G's samples (psi 1, const noise) saved as 8-bit PNGs, as a fake would be."""
    from facebatch.nets.sampling import z_from_seeds
    from facebatch.pipeline.images import save_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with torch.no_grad():
        images = G(z_from_seeds(range(seed, seed + n), G.z_dim), None, noise_mode="const")
    for i, img in enumerate(images):
        paths.append(folder / f"sample{i:04d}.png")
        save_image(img.clamp(-1, 1), paths[-1])
    return paths


_RUNS: dict = {}


def run(files, nets, enc, preset: str, steps: int | None, batch: int) -> tuple[pd.DataFrame, np.ndarray, float]:
    """One recipe on some files, end to end; a recipe already run on the same files is not run again."""
    import facebatch as fb

    key = (tuple(map(str, files)), preset, steps)
    if key not in _RUNS:
        overrides = {} if steps is None else {"steps": steps}
        t0 = time.perf_counter()
        table = fb.project(files, nets, preset=preset, overrides=overrides, batch_size=batch, device="cpu",
                                  encoder=enc)  # fmt: skip
        seconds = (time.perf_counter() - t0) / len(files)
        _RUNS[key] = (table.frame, table.latent("w"), seconds)
    return _RUNS[key]


def summary(frame: pd.DataFrame, seconds: float) -> dict:
    row = {k: float(frame[k].mean()) for k in QUALITY}
    row["seconds_per_image"] = seconds
    return row


def detection(pos: pd.DataFrame, neg: pd.DataFrame, task: str, n_boot: int) -> dict:
    from facebatch.invert.scores import ROW_SCORE_KEYS
    from facebatch.scoring.metrics import separation
    from facebatch.scoring.polarity import spec_for

    out = {}
    for name in ROW_SCORE_KEYS:
        values = np.concatenate([pos[name].to_numpy(float), neg[name].to_numpy(float)])
        if np.isnan(values).any():
            continue
        y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        out[name] = separation(y, spec_for(name, task).orient(values), n_resamples=n_boot, seed=0)
    return out


def figure(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, points in curves.items():
        xs = [p["seconds_per_image"] for p in points]
        for ax, key in zip(axes, ("psnr", "perceptual")):
            ax.plot(xs, [p[key] for p in points], "o-", label=name)
            for p in points:
                ax.annotate(str(p["steps"]), (p["seconds_per_image"], p[key]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
    for ax, label in zip(axes, ("PSNR (dB), higher is better", "ST-LPIPS, lower is better")):
        ax.set_xscale("log")
        ax.set_xlabel("seconds per image (end to end, this CPU)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("celeba64 on CelebA val faces: quality against time (labels: optimisation steps)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="celeba64")
    ap.add_argument("--encoder", default=None, help="default: the generator's own")
    ap.add_argument("--faces", type=int, default=32)
    ap.add_argument("--hybrid-steps", default="10,25,50,100,200")
    ap.add_argument("--default-steps", default="50,100,200,500")
    ap.add_argument("--detect", type=int, default=64, help="images per class for detection")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="8 faces, hybrid 10/25/50/100, default 100/500, 16 per class")
    ap.add_argument(
        "--time-only",
        action="store_true",
        help="quality and seconds on val only: no samples, detection or edits (which do not depend on threads)",
    )
    ap.add_argument(
        "--throughput",
        type=int,
        default=0,
        help="only the speed goal: `encoder` on this many val faces (setup amortised as in a dataset run) against "
        "`fast` at 100 steps on --faces faces; writes OUT.json/.md",
    )
    ap.add_argument("--figure", type=Path, default=REPO / "docs" / "time_to_quality.png")
    ap.add_argument("--out", default="bench/out/encoder")
    a = ap.parse_args()
    if a.quick:  # the quick sizes, except what was given on the command line
        given = {arg.split("=")[0] for arg in sys.argv[1:] if arg.startswith("--")}
        quick = {"faces": 8, "hybrid_steps": "10,25,50,100", "default_steps": "100,500", "detect": 16, "bootstrap": 200}
        for name, value in quick.items():
            if f"--{name.replace('_', '-')}" not in given:
                setattr(a, name, value)
    import facebatch as fb

    torch.set_num_threads(torch.get_num_threads())
    nets = fb.load_generator(a.generator)
    enc = fb.load_encoder(a.encoder, generator=nets)
    if a.throughput:
        return throughput(nets, enc, a)
    faces = val_faces(max(a.faces, a.detect))
    report: dict = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "generator": nets.name,
        "encoder": {"path": str(enc.path), "sha256": enc.sha256, "images_seen": enc.images_seen},
        "torch_threads": torch.get_num_threads(),
        "faces": a.faces,
    }
    curves: dict[str, list] = {"encoder": [], "hybrid": [], "default (from w_avg)": [], "fast (from w_avg)": []}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        samples = sample_pngs(nets.G, max(a.faces, a.detect), Path(tmp) / "samples")
        sets = [("val", faces[: a.faces])] + ([] if a.time_only else [("samples", samples[: a.faces])])
        for label, files in sets:
            # the default preset is the yardstick on real faces only: its 500 steps cost most of the run
            yardstick = [("default (from w_avg)", "default", int(s)) for s in a.default_steps.split(",")]
            for recipe, preset, steps in (
                [("encoder", "encoder", 0)]
                + [("hybrid", "hybrid", int(s)) for s in a.hybrid_steps.split(",")]
                + [("fast (from w_avg)", "fast", 100)]
                + (yardstick if label == "val" else [])
            ):
                frame, _, seconds = run(files, nets, enc, preset, steps, a.batch_size)
                row = {"set": label, "recipe": recipe, "steps": steps, **summary(frame, seconds)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if label == "val":
                    curves[recipe].append(row)
        report["quality"] = rows
        val = pd.DataFrame([r for r in rows if r["set"] == "val"])
        full = val[(val.recipe == "default (from w_avg)")].sort_values("steps").iloc[-1]
        reached = val[(val.recipe == "hybrid") & (val.psnr >= full.psnr) & (val.perceptual <= full.perceptual)]
        best = reached.sort_values("steps").iloc[0] if len(reached) else None
        report["time_to_default_quality"] = {
            "default_steps": int(full.steps),
            "default_psnr": float(full.psnr),
            "default_st_lpips": float(full.perceptual),
            "default_seconds_per_image": float(full.seconds_per_image),
            "hybrid_steps": int(best.steps) if best is not None else None,
            "hybrid_seconds_per_image": float(best.seconds_per_image) if best is not None else None,
            "speedup": float(full.seconds_per_image / best.seconds_per_image) if best is not None else None,
        }
        encoder_row = val[val.recipe == "encoder"].iloc[0]
        fast_row = val[val.recipe == "fast (from w_avg)"].iloc[0]
        report["encoder_vs_fast_speedup"] = float(fast_row.seconds_per_image / encoder_row.seconds_per_image)

        if a.time_only:
            return finish(report, curves, a)
        # detection: G's samples vs val faces, nonfaces vs faces, with the encoder alone and the hybrid
        nonfaces = sorted(p for p in (DATA / "nonfaces").iterdir() if p.suffix.lower() in {".jpg", ".png"})
        det = {}
        hybrid_steps = report["time_to_default_quality"]["hybrid_steps"] or int(a.hybrid_steps.split(",")[-1])
        for recipe, preset, steps in (("encoder", "encoder", 0), (f"hybrid {hybrid_steps}", "hybrid", hybrid_steps)):
            real, _, _ = run(faces[: a.detect], nets, enc, preset, steps, a.batch_size)
            fake, _, _ = run(samples[: a.detect], nets, enc, preset, steps, a.batch_size)
            odd, _, _ = run(nonfaces[: a.detect], nets, enc, preset, steps, a.batch_size)
            det[recipe] = {
                "fake_vs_real": detection(fake, real, "fake", a.bootstrap),
                "nonfaces_vs_faces": detection(odd, real, "anomaly", a.bootstrap),
                "n": {"real": len(real), "fake": len(fake), "nonfaces": len(odd)},
            }
        report["detection"] = det

        # edits: the shipped boundaries on encoder codes and on default-preset codes of the same faces
        sys.path.insert(0, str(REPO / "models" / "celeba64"))
        from measure import boundary_flips  # noqa: E402

        from facebatch.nets import predictors
        from facebatch.nets.registry import get

        predictor = predictors.load(predictors.resolve_predictor("celeba-attrs"))
        boundaries = get(a.generator).boundaries_path() if get(a.generator) else None
        if boundaries is not None:
            edits = {}
            for recipe, preset, steps in (("encoder", "encoder", 0), ("default 500", "default", 500)):
                _, ws, _ = run(faces[: a.faces], nets, enc, preset, steps, a.batch_size)
                edits[recipe] = boundary_flips(nets, predictor, boundaries, ws)
            report["edits"] = edits
    finish(report, curves, a)


def throughput(nets, enc, a) -> None:
    """Seconds per image of `encoder` over many faces and of `fast` (100 steps) over a few, same process."""
    faces = val_faces(max(a.throughput, a.faces))
    run(faces[:8], nets, enc, "encoder", 0, a.batch_size)  # warm-up: first-call allocations are not the method
    _, _, encoder_s = run(faces[: a.throughput], nets, enc, "encoder", 0, a.batch_size)
    _, _, fast_s = run(faces[: a.faces], nets, enc, "fast", 100, a.batch_size)
    r = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "torch_threads": torch.get_num_threads(),
        "encoder_faces": a.throughput,
        "encoder_seconds_per_image": encoder_s,
        "encoder_images_per_second": 1 / encoder_s,
        "fast_faces": a.faces,
        "fast_seconds_per_image": fast_s,
        "speedup": fast_s / encoder_s,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(r, indent=1) + "\n")
    text = (
        f"# `encoder` against `fast` (100 steps), {r['torch_threads']} torch thread(s)\n\n`{r['command']}`\n\n"
        f"`encoder`: {encoder_s:.4f} s per image ({1 / encoder_s:.1f} images/s) over {a.throughput} val faces, "
        f"end to end (read, encode, render, every score column incl. encoder_consistency); `fast` at 100 steps: "
        f"{fast_s:.2f} s per image over {a.faces}; `encoder` is {fast_s / encoder_s:.0f}x faster.\n"
    )
    Path(f"{out}.md").write_text(text)
    print(text)


def finish(report: dict, curves: dict, a) -> None:
    """Write the JSON, the Markdown and the figure; print the Markdown."""
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(report, indent=1) + "\n")
    Path(f"{out}.md").write_text(markdown(report))
    a.figure.parent.mkdir(parents=True, exist_ok=True)
    figure(curves, a.figure)
    print(Path(f"{out}.md").read_text())


def markdown(r: dict) -> str:
    lines = [
        f"# Encoders against optimisation ({r['generator']}, {r['faces']} faces, {r['torch_threads']} thread(s))",
        "",
        f"`{r['command']}`; encoder {Path(r['encoder']['path']).name} ({r['encoder']['images_seen']:,} images seen)",
        "",
        "| set | recipe | steps | PSNR | SSIM | ST-LPIPS | s / image |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for q in r["quality"]:
        lines.append(
            f"| {q['set']} | {q['recipe']} | {q['steps']} | {q['psnr']:.2f} | {q['ssim']:.3f} | {q['perceptual']:.4f} "
            f"| {q['seconds_per_image']:.3f} |"
        )
    t = r["time_to_default_quality"]
    lines += [
        "",
        f"`encoder` is {r['encoder_vs_fast_speedup']:.0f}x faster per image than `fast` (100 steps), end to end.",
        f"Default preset at {t['default_steps']} steps: {t['default_psnr']:.2f} dB, ST-LPIPS "
        f"{t['default_st_lpips']:.4f}, {t['default_seconds_per_image']:.2f} s per image; "
        + (
            f"`hybrid` reaches both at {t['hybrid_steps']} steps in {t['hybrid_seconds_per_image']:.2f} s "
            f"({t['speedup']:.1f}x faster)."
            if t["hybrid_steps"]
            else "no `hybrid` step count measured here reaches both."
        ),
    ]
    if "detection" in r:
        lines += [
            "",
            "Detection (AUROC [95 % CI]):",
            "",
            "| recipe | task | "
            + " | ".join(("anomaly_score", "psnr", "ssim", "perceptual", "encoder_consistency"))
            + " |",
            "|---|---|" + "---:|" * 5,
        ]
    for recipe, d in r.get("detection", {}).items():
        for task in ("fake_vs_real", "nonfaces_vs_faces"):
            cells = []
            for k in ("anomaly_score", "psnr", "ssim", "perceptual", "encoder_consistency"):
                m = d[task].get(k)
                ci = m["auroc"]["ci95"] if m else None
                cells.append(
                    f"{m['auroc']['value']:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "") if m else "-"
                )
            lines.append(f"| {recipe} | {task} | " + " | ".join(cells) + " |")
    if "edits" in r:
        lines += [
            "",
            "Edits: share of calls that flip at strength 3 toward the other call (in brackets: mean |change| of the",
            "other two attributes' probabilities on the way; 0 is a clean edit):",
            "",
        ]
        for recipe, e in r["edits"].items():
            parts = [f"{k} {e[k]:.2f} ({e[f'{k}_others']:.2f})" for k in ("age", "gender", "smile")]
            lines.append(f"- {recipe}: " + ", ".join(parts))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
