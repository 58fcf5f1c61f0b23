"""GPU projection throughput by batch size, resolution and precision, peak memory, and a low-precision quality check.

Random config-f generators (channel_base 16384, channel_max 512; speed does not depend on what the
weights learned), facebatch's `nvlabs` preset with the stlpips-vgg perceptual loss (a VGG16), its
1000-step schedule cut after `--steps` timed steps (plus one untimed warm-up step); CUDA is
synchronised at every step's end. Precision is the projector's `autocast` setting: none (fp32),
fp16, bf16; weights channels-last in every case (`--no-channels-last` for contiguous ones). Peak
memory is torch.cuda.max_memory_allocated per case. The quality check projects
`--quality` W-space samples of the 256-px generator for `--quality-steps` steps in each precision
and prints the final PSNR / SSIM / perceptual distance against fp32's.
Goal (issue 16): batch 16 >= 8x batch 1's image-steps/s.

    python bench/gpu.py                          # 256 and 1024 px, batch 1/4/8/16/32, fp32/fp16/bf16
    python bench/gpu.py --res 256 --batches 1 16 --steps 5 --quality 0

On a machine without CUDA it prints that there is no GPU and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from projector_vs_official import PERCEPTUAL, generator  # noqa: E402

from facebatch.invert.presets import load_preset  # noqa: E402
from facebatch.invert.projector import Projector  # noqa: E402

PRECISIONS = ("none", "fp16", "bf16")


class _Stop(Exception):
    pass


LAYOUT = {"channels_last": True}  # the projector's memory-format setting for every case (--no-channels-last)


def case(G, batch: int, autocast: str, steps: int) -> tuple[float, float]:
    """(seconds per step, peak MiB) of `steps` timed nvlabs steps on a batch of random targets."""
    cfg = load_preset(
        "nvlabs", {"steps": 1000, "perceptual": PERCEPTUAL, "w_avg_samples": 2000, "autocast": autocast, **LAYOUT}
    )
    projector = Projector(G, None, cfg, device="cuda")
    R = G.img_resolution
    targets = torch.rand(batch, 3, R, R, generator=torch.Generator().manual_seed(batch)) * 2 - 1
    stamps: list[float] = []

    def tick(step, total, losses):
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        if len(stamps) > steps:
            raise _Stop

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(_Stop):
        projector.project(targets, list(range(batch)), callback=tick)
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1), torch.cuda.max_memory_allocated() / 2**20


def quality(G, n: int, steps: int) -> None:
    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(7).randn(n, G.z_dim)).float().cuda()
        targets = G.synthesis(G.mapping(z, None), noise_mode="const").clamp(-1, 1).cpu()
    scores = {}
    for ac in PRECISIONS:
        cfg = load_preset(
            "nvlabs", {"steps": steps, "perceptual": PERCEPTUAL, "w_avg_samples": 2000, "autocast": ac, **LAYOUT}
        )
        scores[ac] = Projector(G, None, cfg, device="cuda").project(targets, list(range(n))).scores
    print(f"\nquality: {n} G samples at {G.img_resolution} px, nvlabs preset, {steps} steps")
    for ac in PRECISIONS:
        line = ", ".join(f"{k} {np.mean(scores[ac][k]):.3f}" for k in ("psnr", "ssim", "perceptual"))
        diff = np.max(np.abs(np.asarray(scores[ac]["psnr"]) - np.asarray(scores["none"]["psnr"])))
        print(f"  autocast {ac:>4}: mean {line}; max |PSNR - fp32's| {diff:.2f} dB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per case (+1 untimed)")
    ap.add_argument("--quality", type=int, default=4, help="G samples for the quality check (0: skip)")
    ap.add_argument("--quality-steps", type=int, default=300)
    ap.add_argument("--no-channels-last", action="store_true", help="contiguous weights (default: channels-last)")
    a = ap.parse_args()
    LAYOUT["channels_last"] = not a.no_channels_last
    if not torch.cuda.is_available():
        print("no GPU: CUDA is not available on this machine, nothing to measure (bench/gpu.py needs one)")
        return
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; perceptual {PERCEPTUAL}")
    print(f"{'px':>5} {'prec':>5} {'batch':>5} {'s/step':>8} {'img-steps/s':>12} {'x batch 1':>9} {'peak MiB':>9}")
    for res in a.res:
        G = generator(res).cuda()
        for ac in a.precisions:
            base = None
            for b in a.batches:
                try:
                    sec, peak = case(G, b, ac, a.steps)
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    print(f"{res:>5} {ac:>5} {b:>5} {'out of memory':>31}", flush=True)
                    break
                rate = b / sec
                base = base or rate
                print(f"{res:>5} {ac:>5} {b:>5} {sec:8.3f} {rate:12.2f} {rate / base:9.2f} {peak:9.0f}", flush=True)
        del G
        torch.cuda.empty_cache()
    if a.quality:
        quality(generator(256).cuda(), a.quality, a.quality_steps)


if __name__ == "__main__":
    main()
