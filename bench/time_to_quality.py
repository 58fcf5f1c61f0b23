"""Time to quality on real faces: wall time per image until a reconstruction reaches a PSNR / ST-LPIPS,
for each facebatch preset and for the official NVlabs recipe, on the trained demo model.

Speed alone (bench/projector_vs_official.py) says nothing of how many steps each recipe needs; this
tracks the quality of every step's render and converts the first step that reaches a threshold into
seconds per image with that run's own measured seconds per step.

- Model and faces: the built-in `celeba64` and the first `--images` faces of `val` in split.csv (never
  used to choose any setting), read like `facebatch project` reads them.
- facebatch presets run as `facebatch project` runs them (all images in one batch, the CPU default
  batch 8 covers them); the official recipe is the step-for-step reproduction of stylegan2-ada-pytorch's
  projector from bench/projector_vs_official.py (W space, joint noise maps, batch 1: it asserts batch 1),
  once per image. Both use `stlpips-vgg` as the perceptual network (the official LPIPS VGG trunk needs
  torchvision's ImageNet file, which is not on this machine), so `nvlabs` is that preset with this one
  setting changed.
- Quality of a step: PSNR of the image that step renders (what the loss sees: with the w noise
  NVlabs adds during its first 75 %, with the noise maps being optimised), ST-LPIPS every
  `--lpips-every` steps. The step counts do not depend on machine load.
- Seconds per step: timed apart from the quality runs, in interleaved rounds (every recipe once per
  round, `--time-steps` steps each, best round kept), so load on a shared machine hits all alike;
  steps x seconds per step per image = the wall time in the table.
- Along each recipe's own schedule at its default step count (a recipe cut short would ramp its lr
  down earlier, so this is "how long into the run you get there", which is what a user waiting on
  the default sees). `never` = not reached within the schedule.

    OMP_NUM_THREADS=1 python bench/time_to_quality.py                       # 4 val faces, all recipes
    OMP_NUM_THREADS=1 python bench/time_to_quality.py --images 2 --recipes fast default --psnr 16 18
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from projector_vs_official import official_steps  # noqa: E402

from facebatch import load_generator  # noqa: E402
from facebatch.invert.presets import load_preset  # noqa: E402
from facebatch.invert.projector import Projector  # noqa: E402
from facebatch.nets.cpu_memory import keep_freed_memory  # noqa: E402
from facebatch.nets.perceptual import build_perceptual  # noqa: E402
from facebatch.pipeline.images import load_image  # noqa: E402

PERCEPTUAL = "stlpips-vgg"
RECIPES = ("fast", "default", "image2stylegan", "image2stylegan++", "nvlabs", "official")


class Tracker:
    """Per-step quality of the rendered images, and the seconds spent measuring it (not charged to the recipe)."""

    def __init__(self, targets: torch.Tensor, lpips, every: int):
        self.targets, self.lpips, self.every = targets, lpips, every
        self.psnr: list[np.ndarray] = []
        self.lp: dict[int, np.ndarray] = {}
        self.overhead = 0.0

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, *_ignored) -> torch.Tensor:
        t0 = time.perf_counter()
        x = images.detach().float().clamp(-1, 1)
        mse = (x - self.targets).square().mean(dim=(1, 2, 3)).double().numpy()
        self.psnr.append(10 * np.log10(4.0 / mse))
        step = len(self.psnr)  # 1-based: the render of step `step`
        if step == 1 or step % self.every == 0:
            self.lp[step] = self.lpips(self.targets, x).double().numpy()
        self.overhead += time.perf_counter() - t0
        return torch.zeros(len(x))


def first_step(values: dict[int, np.ndarray] | list[np.ndarray], ok) -> np.ndarray:
    """Per image, the first step whose value satisfies ok(value), else inf."""
    items = values.items() if isinstance(values, dict) else enumerate(values, start=1)
    out = None
    for step, row in items:
        out = np.full(len(row), np.inf) if out is None else out
        hit = ok(row) & np.isinf(out)
        out[hit] = step
    return out


class _Stop(Exception):
    pass


PRECISION: dict = {}  # --autocast: {"autocast": ..., "channels_last": ...} for the facebatch presets


def preset_config(name: str):
    return load_preset(name, {"perceptual": PERCEPTUAL, "w_avg_samples": 2000, **PRECISION})


def time_recipe(G, recipe: str, targets: torch.Tensor, steps: int) -> float:
    """Seconds per step per image over `steps` steps (after one untimed step), no measuring attached."""
    stamps: list[float] = []
    if recipe == "official":
        official_steps(G, build_perceptual(PERCEPTUAL), targets[:1], steps + 1, stamps)
        return (stamps[-1] - stamps[0]) / steps
    if recipe == "image2stylegan++":
        recipe = "image2stylegan"  # its noise phase costs no more per step than the latent phase (no VGG backward)

    def tick(step, total, losses):
        stamps.append(time.perf_counter())
        if len(stamps) > steps:
            raise _Stop

    with contextlib.suppress(_Stop):
        Projector(G, None, preset_config(recipe)).project(targets, list(range(len(targets))), callback=tick)
    return (stamps[-1] - stamps[0]) / steps / len(targets)


def run_preset(G, name: str, targets: torch.Tensor, lpips, every: int) -> dict:
    cfg = preset_config(name)
    projector = Projector(G, None, cfg)
    tracker = Tracker(targets, lpips, every)
    result = projector.project(targets, list(range(len(targets))), extra_loss=tracker)
    return dict(
        steps=cfg.total_steps,
        psnr=tracker.psnr,
        lp=tracker.lp,
        final_psnr=np.asarray(result.scores["psnr"]),
        final_lp=np.asarray(result.scores["perceptual"]),
    )


def run_official(G, targets: torch.Tensor, lpips, every: int, steps: int) -> dict:
    vgg = build_perceptual(PERCEPTUAL)
    psnr_rows, lp_rows = [], []
    for i in range(len(targets)):
        tracker = Tracker(targets[i : i + 1], lpips, every)
        official_steps(G, vgg, targets[i : i + 1], steps, [], observe=tracker)
        psnr_rows.append(np.concatenate(tracker.psnr))
        lp_rows.append(tracker.lp)
    psnr = [np.array([row[s] for row in psnr_rows]) for s in range(steps)]
    lp = {s: np.array([d[s][0] for d in lp_rows]) for s in lp_rows[0]}
    return dict(
        steps=steps,
        psnr=psnr,
        lp=lp,
        final_psnr=psnr[-1],
        final_lp=lp[max(lp)],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/celeba10k"))
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    ap.add_argument("--psnr", type=float, nargs="+", default=[16.0, 18.0, 20.0, 22.0])
    ap.add_argument("--lpips", type=float, nargs="+", default=[0.06, 0.04, 0.03])
    ap.add_argument("--lpips-every", type=int, default=10)
    ap.add_argument("--official-steps", type=int, default=1000)
    ap.add_argument("--time-rounds", type=int, default=3)
    ap.add_argument("--time-steps", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the per-recipe figures here")
    ap.add_argument(
        "--autocast", choices=("none", "bf16", "auto"), help="facebatch presets' precision (default: the presets')"
    )
    a = ap.parse_args()
    if a.autocast:
        PRECISION.update(autocast=a.autocast, channels_last=a.autocast != "none")
    torch.set_num_threads(1)
    keep_freed_memory()
    with open(a.data / "split.csv", newline="") as fh:
        names = [r["image_id"] for r in csv.DictReader(fh) if r["split"] == "val"][: a.images]
    nets = load_generator("celeba64")
    G = nets.G
    targets = torch.stack([load_image(a.data / "images" / n, G.img_resolution)[0] for n in names])
    lpips = build_perceptual(PERCEPTUAL)
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"torch {torch.__version__}, 1 thread; celeba64 ({nets.sha256[:12]}); val faces {', '.join(names)}")
    cfg = preset_config("default")
    print(f"facebatch presets: autocast {cfg.autocast}, channels_last {cfg.channels_last}; the official recipe: fp32")
    rows = {}
    for recipe in a.recipes:
        t0 = time.perf_counter()
        if recipe == "official":
            rows[recipe] = run_official(G, targets, lpips, a.lpips_every, a.official_steps)
        else:
            rows[recipe] = run_preset(G, recipe, targets, lpips, a.lpips_every)
        r = rows[recipe]
        print(
            f"  {recipe}: {r['steps']} steps, final PSNR {r['final_psnr'].mean():.2f} dB, "
            f"ST-LPIPS {r['final_lp'].mean():.4f} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    best = {recipe: float("inf") for recipe in rows}
    for k in range(a.time_rounds):
        for recipe in rows:
            best[recipe] = min(best[recipe], time_recipe(G, recipe, targets, a.time_steps))
        print(f"  timing round {k + 1}: " + ", ".join(f"{r} {best[r]:.4f}" for r in rows), flush=True)
    for recipe, r in rows.items():
        r["sec_per_step_per_image"] = best[recipe]

    def cell(r: dict, steps: np.ndarray) -> str:
        if np.isinf(steps).any():
            return f"never ({int(np.isinf(steps).sum())}/{len(steps)})"
        return f"{np.median(steps) * r['sec_per_step_per_image']:.1f} s ({int(np.median(steps))})"

    header = ["recipe", "steps", "s/step/img", "final PSNR", "final ST-LPIPS"]
    header += [f"PSNR>={t:g}" for t in a.psnr] + [f"LPIPS<={t:g}" for t in a.lpips]
    print(
        "\nwall seconds per image to reach each threshold (median over images; in brackets the step), "
        "along each recipe's own schedule:"
    )
    print(" | ".join(header))
    summary = {}
    for recipe, r in rows.items():
        cells = [recipe, str(r["steps"]), f"{r['sec_per_step_per_image']:.4f}"]
        cells += [f"{r['final_psnr'].mean():.2f}", f"{r['final_lp'].mean():.4f}"]
        summary[recipe] = {"steps": r["steps"], "sec_per_step_per_image": r["sec_per_step_per_image"]}
        for t in a.psnr:
            steps = first_step(r["psnr"], lambda v, t=t: v >= t)
            cells.append(cell(r, steps))
            summary[recipe][f"psnr>={t:g}"] = steps.tolist()
        for t in a.lpips:
            steps = first_step(r["lp"], lambda v, t=t: v <= t)
            cells.append(cell(r, steps))
            summary[recipe][f"lpips<={t:g}"] = steps.tolist()
        summary[recipe]["final_psnr"] = r["final_psnr"].tolist()
        summary[recipe]["final_lpips"] = r["final_lp"].tolist()
        print(" | ".join(cells))
    if a.json:
        a.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
