"""Does batching pay on the CPU? Per-image projection throughput at batch 1, 4 and 8, in interleaved rounds.

`bench/projection.py` runs each case in a fresh process (for honest peak memory); on a shared 2-core
machine its figures drift with the load. Here every batch size runs inside one process in rounds
(1, 4, 8, 1, 4, 8, ...), each case timed from the end of its first step to the end of its last, and
the figure kept is the best round: load hits each batch size alike. Same targets (random images),
same preset, same thread count; only the batch size changes.

Generators: the built-in `celeba64` (the model CPU users actually project with: 64 px, narrow
layers) and, with `--res 256`, a random 256 px config-f generator (the widths of the official
256 px models). Precision: fp32 and, with `--autocast bf16`, bf16 autocast + channels_last.

    OMP_NUM_THREADS=1 python bench/cpu_batching.py                          # celeba64, default preset
    OMP_NUM_THREADS=1 python bench/cpu_batching.py --model config-f-256 --rounds 2 --steps 2
    OMP_NUM_THREADS=2 python bench/cpu_batching.py --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shlex
import sys
import time

import torch

from facebatch import load_generator
from facebatch.invert.presets import load_preset
from facebatch.invert.projector import Projector
from facebatch.nets.cpu_memory import keep_freed_memory


def build(model: str):
    if model == "celeba64":
        return load_generator("celeba64").G
    import facebatch.nets.stylegan2 as sg2

    torch.manual_seed(0)
    G = sg2.Generator(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=int(model.rsplit("-", 1)[1]),
        img_channels=3,
        mapping_kwargs={"num_layers": 8},
        synthesis_kwargs={"channel_base": 16384, "channel_max": 512, "conv_clamp": 256},
    )
    return G.eval().requires_grad_(False)


def seconds_per_step(G, batch: int, steps: int, preset: str, perceptual: str, precision: str) -> float:
    """Mean seconds per optimisation step for `batch` images (steps + 1 run; the first is not timed)."""
    autocast, cl = ("bf16", True) if precision == "bf16" else ("none", False)
    settings = {"steps": 500, "perceptual": perceptual, "w_avg_samples": 2000}
    cfg = load_preset(preset, {**settings, "autocast": autocast, "channels_last": cl})
    targets = torch.rand(batch, 3, G.img_resolution, G.img_resolution, generator=torch.Generator().manual_seed(1))
    stamps: list[float] = []

    class Stop(Exception):
        pass

    def tick(step, total, losses):
        stamps.append(time.perf_counter())
        if len(stamps) > steps:
            raise Stop  # the 500-step schedule cut after `steps` timed steps (scoring not timed)

    with contextlib.suppress(Stop):
        Projector(G, None, cfg).project(targets * 2 - 1, list(range(batch)), callback=tick)
    G.to(memory_format=torch.contiguous_format)
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="celeba64", help="celeba64 or config-f-RES (random config-f widths)")
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per case per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--perceptual", default="stlpips-vgg")
    ap.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16 (bf16 autocast + channels_last)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    keep_freed_memory()
    G = build(a.model)
    batches = [int(b) for b in a.batches.split(",")]
    precisions = a.precisions.split(",")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), model {a.model} ({G.img_resolution} px), "
        f"preset {a.preset}, perceptual {a.perceptual}; best of {a.rounds} interleaved rounds x {a.steps} steps"
    )
    best = {(p, b): math.inf for p in precisions for b in batches}
    for r in range(a.rounds):
        for p in precisions:
            for b in batches:
                best[p, b] = min(best[p, b], seconds_per_step(G, b, a.steps, a.preset, a.perceptual, p))
        print(f"round {r + 1}: " + ", ".join(f"{p} b{b} {b / best[p, b]:.2f}" for p in precisions for b in batches))
    print(f"\n{'precision':>9} {'batch':>5} {'s/step':>8} {'image-steps/s':>14} {'per image x batch 1':>20}")
    for p in precisions:
        for b in batches:
            rate = b / best[p, b]
            base = batches[0] / best[p, batches[0]]
            print(f"{p:>9} {b:>5} {best[p, b]:8.3f} {rate:14.2f} {rate / base:20.2f}")


if __name__ == "__main__":
    main()
