"""Which preset to make the default: every preset at the same step budget on targets with known answers.

Targets are the generator's own samples, so the right answer is known: W samples (one z per image,
what a trained generator's real-looking images are closest to) and style-mixed W+ samples (each
layer's w from another z, which no single w explains). For each preset it reports, per target kind:

Targets stay unclamped for the optimisation, so the known code reproduces them exactly (the random
fixture generator overshoots [-1, 1]); every score clamps pixels first, as a saved image would.

- PSNR (dB, clamped pixels) of the reconstruction it returns (with its optimised noise maps, if any);
- ST-LPIPS between target and reconstruction;
- latent-only PSNR: the returned W+ code rendered with the generator's constant noise, i.e. what an
  editor that keeps only the latent gets (noise maps that absorbed detail do not count here);
- latent error: mean over layers of ||w - w_true|| / ||w_avg - w_true||, 1.0 = no better than the start.

Budgets are total optimisation steps; presets with a noise phase (image2stylegan++) split it in half.
`nvlabs` uses stlpips-vgg here because lpips-vgg's torchvision trunk cannot be downloaded offline.
None of these figures depends on timing, so a busy machine gives the same numbers.

    python bench/projection_presets.py                  # 150 steps, 2 + 2 targets
    python bench/projection_presets.py --quick          # 20 steps, 1 + 1 target
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

FIXTURE = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "reference" / "nvlabs_sg2ada_64_weights.pt"
)


def targets(G, n: int):
    """(name, true W+ codes, images) for n W samples and n style-mixed W+ samples.

    Their seeds are disjoint from any projection seed.
    """
    import torch

    from facebatch.nets.sampling import z_from_seeds

    with torch.no_grad():
        w_codes = G.mapping(z_from_seeds(range(1000, 1000 + n), G.z_dim))
        mixed = G.mapping(z_from_seeds(range(2000, 2000 + n * G.num_ws), G.z_dim))[:, 0].reshape(n, G.num_ws, G.w_dim)
        return [
            (kind, ws, G.synthesis(ws, noise_mode="const"))
            for kind, ws in (("W samples", w_codes), ("W+ mixed", mixed))
        ]


def budget_overrides(preset: str, steps: int) -> dict:
    from facebatch.invert.presets import load_preset

    cfg = load_preset(preset)
    over: dict = {"steps": steps}
    if cfg.noise_optimization == "sequential":
        over = {"steps": steps - steps // 2, "noise_steps": steps // 2}
    if cfg.perceptual == "lpips-vgg":
        over["perceptual"] = "stlpips-vgg"
    return over


def measure(G, preset: str, steps: int, kinds) -> list[dict]:
    import torch

    from facebatch.invert.presets import load_preset
    from facebatch.invert.projector import Projector
    from facebatch.nets.perceptual import build_perceptual

    over = budget_overrides(preset, steps)
    projector = Projector(G, None, load_preset(preset, over))
    stlpips = build_perceptual("stlpips-vgg")
    w_avg = projector.w_avg.reshape(1, 1, -1)
    # All targets in one batch (cheaper than one call per kind; batch mates do not change results).
    names = [kind for kind, ws, _ in kinds for _ in range(len(ws))]
    ws_true = torch.cat([ws for _, ws, _ in kinds])
    images = torch.cat([im for _, _, im in kinds])
    res = projector.project(images, list(range(len(images))))
    with torch.no_grad():
        latent_only = G.synthesis(res.ws, noise_mode="const")
        lp = stlpips(images.clamp(-1, 1), res.reconstructions.clamp(-1, 1))

    def psnr(x):  # on clamped pixels, as the images would be saved
        return 10 * torch.log10(4 / (x.clamp(-1, 1) - images.clamp(-1, 1)).square().mean(dim=(1, 2, 3)))

    rel = ((res.ws - ws_true).norm(dim=2) / (w_avg - ws_true).norm(dim=2)).mean(dim=1)
    full, alone = psnr(res.reconstructions), psnr(latent_only)
    rows = []
    for kind in dict.fromkeys(names):
        sel = torch.tensor([n == kind for n in names])
        rows.append(
            dict(
                preset=preset,
                kind=kind,
                overrides=over,
                psnr=full[sel].mean().item(),
                psnr_min=full[sel].min().item(),
                stlpips=lp[sel].mean().item(),
                latent_only_psnr=alone[sel].mean().item(),
                latent_error=rel[sel].mean().item(),
            )
        )
    return rows


def main() -> None:
    import torch
    from rich.console import Console
    from rich.table import Table

    from facebatch.invert.presets import PRESETS
    from facebatch.nets.checkpoints import load_networks

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default=str(FIXTURE), help="checkpoint (default: the 64-px NVlabs fixture)")
    p.add_argument("--steps", type=int, default=150, help="total optimisation steps per preset")
    p.add_argument("--images", type=int, default=2, help="targets per kind")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--quick", action="store_true", help="20 steps, 1 target per kind: checks the script end to end")
    p.add_argument("--json", help="also write the rows to this file")
    a = p.parse_args()
    if a.quick:
        a.steps, a.images = 20, 1
    torch.set_num_threads(a.threads)

    console = Console()
    console.print(f"command: {shlex.join([sys.executable, *sys.argv])}", highlight=False, soft_wrap=True)
    G = load_networks(a.generator).G.eval().requires_grad_(False)
    kinds = targets(G, a.images)
    rows = []
    for preset in a.presets.split(","):
        rows += measure(G, preset, a.steps, kinds)
        console.print(f"  {preset}: done", highlight=False)
    table = Table(
        title=f"presets at {a.steps} total steps, {G.img_resolution}px generator, {a.images} targets per kind"
    )
    for col in ("preset", "targets", "PSNR dB", "min PSNR", "ST-LPIPS", "latent-only PSNR", "latent error"):
        table.add_column(col, justify="right" if col not in ("preset", "targets") else "left")
    for r in rows:
        table.add_row(
            r["preset"],
            r["kind"],
            f"{r['psnr']:.2f}",
            f"{r['psnr_min']:.2f}",
            f"{r['stlpips']:.4f}",
            f"{r['latent_only_psnr']:.2f}",
            f"{r['latent_error']:.3f}",
        )
    console.print(table)
    if a.json:
        Path(a.json).write_text(json.dumps(dict(steps=a.steps, images=a.images, rows=rows), indent=2))


if __name__ == "__main__":
    main()
