"""Image2StyleGAN(++) applications and expression transfer: seconds per pair per app, and one contact sheet per app.

Runs on the 64-px NVlabs fixture generator (random weights; inputs: ../shared/data/faces_aligned) and,
when present, the trained demo generator ../shared/models/celeba64 (inputs: celeba10k `val` images).
Each app runs a batch of --pairs pairs; the time is that batch's wall time divided by the pairs.
Morph, layer crossover and expression transfer start from a W+ (+ noise) projection of both images
(the `project` row); their own rows time the latent maths and rendering only.

    python bench/mixing.py --out /tmp/mix-bench                    # 100 W+ + 50 noise steps, 3 pairs
    python bench/mixing.py --out /tmp/mix-bench --steps 20 --noise-steps 10 --pairs 2
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURE = SHARED / "fixtures" / "reference" / "nvlabs_sg2ada_64_weights.pt"
DEMO = SHARED / "models" / "celeba64" / "celeba64.safetensors"
CELL = 128  # px per sheet cell (64-px images are shown at 2x, nearest)


def fixture_generator():
    from facebatch.nets.stylegan2 import Generator

    ckpt = torch.load(FIXTURE, weights_only=True)
    G = Generator(**ckpt["G_init_kwargs"])
    G.load_state_dict(ckpt["G_ema_state_dict"], strict=True)
    return G.eval().requires_grad_(False)


def demo_generator():
    from facebatch.nets.checkpoints import load_networks

    return load_networks(DEMO, with_d=False).G.eval().requires_grad_(False)


def images_for(kind: str, count: int, size: int) -> tuple[torch.Tensor, list[str]]:
    from facebatch.pipeline.images import load_image

    if kind == "faces_aligned":
        files = sorted((SHARED / "data" / "faces_aligned").glob("*.jpg"))
    else:
        root = SHARED / "data" / "celeba10k"
        with open(root / "split.csv") as fh:
            names = [row["image_id"] for row in csv.DictReader(fh) if row["split"] == "val"]
        files = [root / "images" / n for n in names]
    # Alternate the two halves of the list so pairs mix people (faces_aligned is sorted female, then male).
    files = [f for pair in zip(files[: len(files) // 2], files[len(files) // 2 :]) for f in pair][:count]
    return torch.stack([load_image(f, size)[0] for f in files]), [f.name for f in files]


def to_pil(img: torch.Tensor) -> Image.Image:
    from facebatch.pipeline.images import tensor_to_pil

    return tensor_to_pil(img.clamp(-1, 1)).resize((CELL, CELL), Image.Resampling.NEAREST)


def sheet(path: Path, title: str, columns: list[str], rows: list[list[torch.Tensor]]) -> None:
    """One row per pair; columns labelled at the top."""
    header = 30
    out = Image.new("RGB", (CELL * len(columns), header + CELL * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    draw.text((3, 2), title, fill=(0, 0, 0))
    for j, name in enumerate(columns):
        draw.text((j * CELL + 3, 16), name, fill=(0, 0, 0))
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            out.paste(to_pil(img), (j * CELL, header + i * CELL))
    out.save(path)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def grey_hole(img: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    return img * known


def run(name: str, G, a: torch.Tensor, b: torch.Tensor, args, out: Path) -> list[tuple[str, str, float]]:
    from facebatch.edit import mixing as mx
    from facebatch.edit.masks import hole_mask
    from facebatch.invert.presets import load_preset
    from facebatch.invert.projector import Projector

    R, n = G.img_resolution, a.shape[0]
    seeds = list(range(n))
    overrides = {
        "steps": args.steps,
        "noise_steps": args.noise_steps,
        "lr": args.lr,
        "lr_rampup": 0.05,
        "lr_rampdown": 0.25,
        "noise_lr": args.noise_lr,
        "w_avg_samples": 2000,
    }
    projector = Projector(G, None, load_preset("image2stylegan++", overrides))
    no_noise = Projector(G, None, load_preset("image2stylegan++", {**overrides, "noise_steps": 0}))
    times = []

    def note(app: str, seconds: float) -> None:
        times.append((name, app, seconds / n))
        print(f"  {name} {app}: {seconds / n:.1f} s/pair", flush=True)

    left = hole_mask("left", R, n)
    res, dt = timed(lambda: mx.crossover(projector, a, b, left, seeds))
    note("crossover (left half A)", dt)
    sheet(
        out / f"{name}-crossover.png",
        f"{name}: crossover, left half from A, right half from B",
        ["A", "B", "cut+paste", "result"],
        [[a[i], b[i], res.composite[i], res.images[i]] for i in range(n)],
    )

    known = 1 - hole_mask("center", R, n)
    res, dt = timed(lambda: mx.inpaint(projector, a, known, seeds))
    note("inpaint (centre hole)", dt)
    sheet(
        out / f"{name}-inpaint.png",
        f"{name}: inpainting a centre hole",
        ["input", "filled", "G render", "truth"],
        [[grey_hole(a[i], known[i]), res.composite[i], res.images[i], a[i]] for i in range(n)],
    )

    region = hole_mask(args.style_region, R, n)
    res, dt = timed(lambda: mx.style_transfer(no_noise, a, b, region, seeds, style_weight=args.style_weight))
    plain = mx.style_transfer(no_noise, a, b, region, seeds, style_weight=0.0)
    note(f"style ({args.style_region}, weight {args.style_weight:g})", dt)
    sheet(
        out / f"{name}-style.png",
        f"{name}: style of B inside the {args.style_region} box of A",
        ["content A", "style B", "region", "no style", "result"],
        [[a[i], b[i], grey_hole(a[i], 1 - region[i]), plain.images[i], res.images[i]] for i in range(n)],
    )

    both, dt = timed(lambda: projector.project(torch.cat([a, b]), list(range(2 * n))))
    note("project A and B (W+ + noise)", dt)
    w_a, w_b = both.ws[:n], both.ws[n:]
    noise_a, noise_b = [m[:n] for m in both.noise], [m[n:] for m in both.noise]

    ts = [0.0, 0.25, 0.5, 0.75, 1.0]
    frames, dt = timed(lambda: mx.render(G, *mx.morph(w_a, w_b, ts, noise_a, noise_b)))
    note("morph (5 frames, render)", dt)
    sheet(
        out / f"{name}-morph.png",
        f"{name}: morph of the projections (codes and noise maps)",
        ["A", *[f"t={t:g}" for t in ts], "B"],
        [[a[i], *frames[i], b[i]] for i in range(n)],
    )

    k = G.num_ws // 2
    (crossed, expr), dt = timed(
        lambda: (mx.render(G, mx.layer_crossover(w_a, w_b, k)), mx.render(G, mx.expression_transfer(w_a, w_b)))
    )
    note(f"layer crossover ({k}) + expression (render)", dt)
    labels, alphas = mx.alpha_sweep(G.num_ws, widths=(2,))
    sweep = mx.render(G, mx.expression_sweep(w_a, w_b, alphas))
    sheet(
        out / f"{name}-expression.png",
        f"{name}: appearance A, expression B: default alpha (layers 3-4), layer crossover, alpha sweep",
        ["app A", "expr B", "recon A", "recon B", "alpha 3-4", f"first {k} A", *[f"alpha {x}" for x in labels]],
        [
            [a[i], b[i], both.reconstructions[i], both.reconstructions[n + i], expr[i], crossed[i], *sweep[i]]
            for i in range(n)
        ],
    )
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the contact sheets")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="W+ steps")
    parser.add_argument("--noise-steps", type=int, default=50, help="noise-map steps after W+")
    parser.add_argument("--lr", type=float, default=0.1, help="peak lr of the W+ phase (NVlabs ramps)")
    parser.add_argument("--noise-lr", type=float, default=0.05)
    parser.add_argument("--style-weight", type=float, default=0.2)
    parser.add_argument("--style-region", default="right")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))

    cases = []
    if FIXTURE.exists():
        cases.append(("fixture", fixture_generator, "faces_aligned"))
    if DEMO.exists() and not args.skip_demo:
        cases.append(("celeba64", demo_generator, "celeba10k-val"))
    rows = []
    for name, build, data in cases:
        G = build()
        imgs, files = images_for(data, 2 * args.pairs, G.img_resolution)
        print(
            f"{name}: {G.img_resolution} px, {G.num_ws} W+ layers; pairs: "
            + ", ".join(f"{files[2 * i]} + {files[2 * i + 1]}" for i in range(args.pairs)),
            flush=True,
        )
        rows += run(name, G, imgs[0::2], imgs[1::2], args, args.out)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"seconds per pair, {args.threads} thread(s), {args.steps} W+ + {args.noise_steps} noise steps")
    for col in ("generator", "app", "s / pair"):
        table.add_column(col)
    for gen, app, sec in rows:
        table.add_row(gen, app, f"{sec:.2f}")
    Console().print(table)
    print(f"sheets in {args.out}")


if __name__ == "__main__":
    main()
