"""Projection throughput: image-steps/s against batch size, peak memory, and the nvlabs preset's time per image.

Each case runs in a fresh process so its peak memory is its own (RSS on CPU, max allocated on CUDA).
Generators have config-f widths (channel_base 16384, channel_max 512) and random weights: speed
does not depend on what the weights learned. Timing covers the optimisation steps only (from the
end of the first step to the end of the last, via the projector's callback), not set-up or scoring.

    python bench/projection.py                       # 64 and 256 px, batch 1/4/8/16, 5 steps each
    python bench/projection.py --quick               # end-to-end check: 64 px, batch 1/4, 1 step (figures meaningless)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shlex
import sys
import time

CONFIG_F = dict(channel_base=16384, channel_max=512, num_fp16_res=0, conv_clamp=256)


def _generator(resolution: int):
    import torch

    from facebatch.nets.stylegan2 import Generator

    torch.manual_seed(0)
    G = Generator(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=resolution,
        img_channels=3,
        mapping_kwargs=dict(num_layers=8),
        synthesis_kwargs=CONFIG_F,
    )
    return G.eval().requires_grad_(False)


def _case(args: dict) -> dict:
    """One (resolution, batch, preset) measurement, in its own process."""
    import torch

    from facebatch.invert.presets import load_preset
    from facebatch.invert.projector import Projector

    torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    G = _generator(args["resolution"])
    cfg = load_preset(args["preset"], {"steps": args["steps"], "perceptual": args["perceptual"], "w_avg_samples": 2000})
    projector = Projector(G, None, cfg, device=device)
    targets = torch.rand(args["batch"], 3, G.img_resolution, G.img_resolution) * 2 - 1
    seeds = list(range(args["batch"]))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stamps: list[float] = []

    def tick(step, total, losses):
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    projector.project(targets, seeds, callback=tick)
    steps_timed = len(stamps) - 1
    seconds = stamps[-1] - stamps[0]
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return dict(
        resolution=args["resolution"],
        batch=args["batch"],
        preset=args["preset"],
        steps_timed=steps_timed,
        sec_per_step=seconds / steps_timed,
        image_steps_per_s=args["batch"] * steps_timed / seconds,
        peak_mb=peak,
        rss_before_mb=rss_before,
        memory="cuda max allocated" if device.type == "cuda" else "peak RSS",
    )


def run_case(args: dict) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_case, (args,))


def main() -> None:
    import torch
    from rich.console import Console
    from rich.table import Table

    from facebatch.errors import ModelNotAvailable
    from facebatch.nets.perceptual import build_perceptual

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolutions", default="64,256")
    p.add_argument("--batches", default="1,4,8,16")
    p.add_argument("--steps", type=int, default=5, help="timed steps per case (plus one untimed first step)")
    p.add_argument("--preset", default="default", help="preset for the throughput cases (perceptual on)")
    p.add_argument("--perceptual", default="stlpips-vgg")
    p.add_argument(
        "--nvlabs-steps",
        type=int,
        default=5,
        help="steps measured for the nvlabs preset (0 = skip); its 1000-step time per image is extrapolated from them",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument(
        "--quick",
        action="store_true",
        help="check the script end to end: 64 px, batches 1 and 4, 1 timed step, nvlabs 1 step",
    )
    a = p.parse_args()
    if a.quick:
        a.resolutions, a.batches, a.steps, a.nvlabs_steps = "64", "1,4", 1, 1

    console = Console()
    device_name = (
        torch.cuda.get_device_name(0)
        if a.device.startswith("cuda")
        else f"CPU, {a.threads} threads (no CUDA device found)"
        if not torch.cuda.is_available()
        else f"CPU, {a.threads} threads"
    )
    console.print(f"command: {shlex.join([sys.executable, *sys.argv])}", highlight=False, soft_wrap=True)
    console.print(
        f"device: {device_name}; torch {torch.__version__}; preset {a.preset}, perceptual {a.perceptual}; "
        f"{a.steps} timed step(s) per case",
        highlight=False,
    )
    rows = []
    for res in [int(r) for r in a.resolutions.split(",")]:
        for batch in [int(b) for b in a.batches.split(",")]:
            rows.append(
                run_case(
                    dict(
                        resolution=res,
                        batch=batch,
                        steps=a.steps + 1,
                        preset=a.preset,
                        perceptual=a.perceptual,
                        device=a.device,
                        threads=a.threads,
                    )
                )
            )
            r = rows[-1]
            console.print(
                f"  {res}px batch {batch}: {r['image_steps_per_s']:.2f} image-steps/s, peak {r['peak_mb']:.0f} MB"
            )
    table = Table(title="projection throughput")
    for col in ("px", "batch", "s/step", "image-steps/s", "x batch 1", "peak MB"):
        table.add_column(col, justify="right")
    smallest = {}  # resolution -> rate of its smallest batch, the speed-up baseline
    for r in sorted(rows, key=lambda r: -r["batch"]):
        smallest[r["resolution"]] = r["image_steps_per_s"]
    for r in rows:
        table.add_row(
            str(r["resolution"]),
            str(r["batch"]),
            f"{r['sec_per_step']:.3f}",
            f"{r['image_steps_per_s']:.2f}",
            f"{r['image_steps_per_s'] / smallest[r['resolution']]:.2f}",
            f"{r['peak_mb']:.0f}",
        )
    console.print(table)
    for res in sorted({r["resolution"] for r in rows}):
        by_batch = {r["batch"]: r["image_steps_per_s"] for r in rows if r["resolution"] == res}
        if 1 in by_batch and 16 in by_batch:
            console.print(
                f"{res}px: batch 16 gives {by_batch[16] / by_batch[1]:.1f}x the image throughput of batch 1 "
                "(target on a GPU: >= 8x)",
                highlight=False,
            )

    if a.nvlabs_steps:
        # lpips-vgg (the official distance) needs torchvision's VGG16 file; without it time the same
        # schedule with stlpips-vgg, a VGG16 of the same size.
        try:
            build_perceptual("lpips-vgg")
            perc = "lpips-vgg"
        except ModelNotAvailable:
            perc = "stlpips-vgg"
            console.print("lpips-vgg trunk not in torch hub's cache: timing nvlabs with stlpips-vgg (also VGG16)")
        largest = max(int(b) for b in a.batches.split(","))
        for res in [int(r) for r in a.resolutions.split(",")]:
            for batch in sorted({1, largest}):
                r = run_case(
                    dict(
                        resolution=res,
                        batch=batch,
                        steps=a.nvlabs_steps + 1,
                        preset="nvlabs",
                        perceptual=perc,
                        device=a.device,
                        threads=a.threads,
                    )
                )
                # 1000 steps (the preset's length), divided over the images optimised together
                r["seconds_per_image_1000_steps"] = r["sec_per_step"] * 1000 / batch
                rows.append(r)
                console.print(
                    f"nvlabs preset ({perc}), {res}px, batch {batch}: {r['sec_per_step']:.3f} s/step -> "
                    f"{r['seconds_per_image_1000_steps']:.1f} s per image for 1000 steps "
                    f"(peak {r['peak_mb']:.0f} MB)",
                    highlight=False,
                )
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(device=device_name, torch=torch.__version__, rows=rows), fh, indent=2)


if __name__ == "__main__":
    main()
