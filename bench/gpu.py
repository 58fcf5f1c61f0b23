"""GPU projection throughput by resolution, precision and batch, peak memory, and model FLOP utilisation.

Generators: at 64 px the built-in `celeba64` (what the demo runs), at 256 px and above a random
config-f generator (channel_base 16384, channel_max 512; speed does not depend on what the weights
learned). Each case runs facebatch's `nvlabs` preset (W space, stlpips-vgg perceptual loss, noise
regularisation) for one untimed warm-up step and `--steps` timed steps, CUDA synchronised at every
step's end; the median step time is reported.

Precisions:
  fp32  autocast none, TF32 off (matmuls and convolutions in true fp32)
  tf32  autocast none, TF32 on (the matrix units in their fp32 mode; PyTorch's default for convolutions)
  bf16  bfloat16 autocast (losses, latents and Adam stay fp32), TF32 on
  fp16  float16 autocast, TF32 on
Weights channels-last in every case (`--no-channels-last` for contiguous ones).

FLOPs: torch's FlopCounterMode counts the generator's forward MACs per image and the FLOPs of a
whole optimisation step (two steps minus one, so setup work cancels); MFU is the achieved
step FLOP/s over the ceiling of that precision's matrix units, measured here by a large matmul
(`--no-ceiling` uses the H100/H200 datasheet's dense figures instead: fp32 67, tf32 495, bf16 and
fp16 989 TFLOP/s). Without the stlpips weight file (a lent GPU machine gets the repository, not the
56-MiB wheel) the perceptual net is the same architecture with random weights: the same FLOPs and
code path, and the script says so.

    python bench/gpu.py                                     # 64 and 256 px, batch 1/4/16/64, 4 precisions
    python bench/gpu.py --res 256 --batches 1 16 --steps 5 --json out.json
    python bench/gpu.py --device cpu --res 32 --batches 1 2 --steps 1 --quality 0   # toy dry run

On a machine without CUDA (and no --device cpu) it prints that there is no GPU and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from projector_vs_official import generator as config_f_generator  # noqa: E402

import facebatch.nets.perceptual as perceptual  # noqa: E402
from facebatch.errors import ModelNotAvailable  # noqa: E402
from facebatch.invert.presets import load_preset  # noqa: E402
from facebatch.invert.projector import Projector  # noqa: E402

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
AUTOCAST = {"fp32": "none", "tf32": "none", "bf16": "bf16", "fp16": "fp16"}
DATASHEET_TFLOPS = {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}  # H100/H200 SXM, dense
LAYOUT = {"channels_last": True}


class _Stop(Exception):
    pass


def use_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generator(res: int):
    """The built-in celeba64 at 64 px; a random config-f generator at other resolutions."""
    if res == 64:
        from facebatch.nets.checkpoints import load_networks

        return load_networks("celeba64", with_d=False).G.eval().requires_grad_(False), "celeba64"
    return config_f_generator(res), f"config-f random {res}"


def toy_generator(res: int):
    from facebatch.nets.stylegan2 import Generator

    torch.manual_seed(0)
    kw = dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=res, img_channels=3, mapping_kwargs={"num_layers": 2})
    return Generator(**kw, synthesis_kwargs={"channel_base": 256, "channel_max": 32}).eval(), f"toy {res}"


def make_projector(G, precision: str, device: torch.device, steps: int = 1000) -> Projector:
    cfg = load_preset(
        "nvlabs",
        {"steps": steps, "perceptual": "stlpips-vgg", "w_avg_samples": 2000, "autocast": AUTOCAST[precision], **LAYOUT},
    )
    return Projector(G, None, cfg, device=device)


def run_steps(projector: Projector, batch: int, steps: int, device: torch.device) -> list[float]:
    """Wall time of each of `steps` optimisation steps after the first (the warm-up)."""
    R = projector.G.img_resolution
    targets = torch.rand(batch, 3, R, R, generator=torch.Generator().manual_seed(batch)) * 2 - 1
    stamps: list[float] = []

    def tick(step, total, losses):
        sync(device)
        stamps.append(time.perf_counter())
        if len(stamps) > steps:
            raise _Stop

    with contextlib.suppress(_Stop):
        projector.project(targets, list(range(batch)), callback=tick)
    return list(np.diff(stamps))


def counted_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def step_flops_per_image(projector: Projector, batch: int = 2) -> float:
    """FLOPs of one optimisation step per image: (two steps) - (one step), so the setup cancels."""
    R = projector.G.img_resolution
    targets = torch.rand(batch, 3, R, R, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def steps(n):
        done = []

        def stop_after(step, total, losses):  # counts calls: the callback's step index is not 0-based
            done.append(step)
            if len(done) >= n:
                raise _Stop

        def go():
            with contextlib.suppress(_Stop):
                projector.project(targets, list(range(batch)), callback=stop_after)

        return counted_flops(go)

    return (steps(2) - steps(1)) / batch


def generator_macs(G, device: torch.device) -> float:
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, device=device), None)
        return counted_flops(lambda: G.synthesis(ws, noise_mode="const")) / 2


def matmul_ceiling(precision: str, device: torch.device, n: int = 8192) -> float:
    """TFLOP/s of an n^3 matmul on random data in this precision (median of 10 after 3 warm-ups)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    use_tf32(precision != "fp32")
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(13):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e12


def quality(G, n: int, steps: int, device: torch.device, precisions) -> list[dict]:
    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(7).randn(n, G.z_dim)).float().to(device)
        targets = G.synthesis(G.mapping(z, None), noise_mode="const").clamp(-1, 1).cpu()
    scores = {}
    for p in precisions:
        use_tf32(p != "fp32")
        scores[p] = make_projector(G, p, device, steps).project(targets, list(range(n))).scores
    print(f"\nquality: {n} G samples at {G.img_resolution} px, nvlabs preset, {steps} steps")
    rows = []
    for p in precisions:
        means = {k: float(np.mean(scores[p][k])) for k in ("psnr", "ssim", "perceptual")}
        diff = float(np.max(np.abs(np.asarray(scores[p]["psnr"]) - np.asarray(scores[precisions[0]]["psnr"]))))
        line = ", ".join(f"{k} {v:.3f}" for k, v in means.items())
        print(f"  {p:>4}: mean {line}; max |PSNR - {precisions[0]}'s| {diff:.2f} dB")
        rows.append({"precision": p, **means, "max_psnr_diff_db": diff})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per case (+1 untimed)")
    ap.add_argument("--quality", type=int, default=4, help="G samples for the quality check (0: skip)")
    ap.add_argument("--quality-steps", type=int, default=100)
    ap.add_argument("--no-channels-last", action="store_true", help="contiguous weights (default: channels-last)")
    ap.add_argument("--no-ceiling", action="store_true", help="MFU against datasheet peaks, not a measured matmul")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for a toy dry run")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    a = ap.parse_args()
    LAYOUT["channels_last"] = not a.no_channels_last
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no GPU: CUDA is not available on this machine, nothing to measure (bench/gpu.py needs one)")
        return
    toy = device.type == "cpu"
    try:
        perceptual.stlpips_weights_path()
        weights = "stlpips-vgg (trained weights)"
    except ModelNotAvailable:
        perceptual._build_stlpips_vgg = perceptual.stand_in_stlpips_vgg
        weights = "stlpips-vgg architecture with random weights (the weight file is absent; same FLOPs)"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"device: {name}; torch {torch.__version__}; perceptual {weights}")
    report = {"device": name, "torch": torch.__version__, "perceptual": weights, "cases": []}

    ceilings = {}
    for p in a.precisions:
        if a.no_ceiling or toy:
            ceilings[p] = DATASHEET_TFLOPS[p]
        else:
            ceilings[p] = matmul_ceiling(p, device)
    source = "datasheet" if a.no_ceiling or toy else "measured 8192^3 matmul"
    print("ceilings (" + source + "): " + ", ".join(f"{p} {c:.0f} TFLOP/s" for p, c in ceilings.items()))
    report["ceilings_tflops"], report["ceiling_source"] = ceilings, source

    header = f"{'px':>5} {'prec':>5} {'batch':>5} {'s/step':>8} {'img-steps/s':>12} {'x b1':>6} {'peak MiB':>9}"
    for res in a.res:
        G, g_name = toy_generator(res) if toy else generator(res)
        G = G.to(device)
        use_tf32(True)
        macs = generator_macs(G, device)
        flops = step_flops_per_image(make_projector(G, "tf32", device))
        print(
            f"\n{g_name}: G synthesis {macs / 1e9:.3g} GMAC per image; "
            f"one nvlabs step {flops / 1e9:.3g} GFLOP per image"
        )
        print(header + f" {'TFLOP/s':>8} {'MFU':>6}")
        for p in a.precisions:
            use_tf32(p != "fp32")
            base = None
            for b in a.batches:
                try:
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    times = run_steps(make_projector(G, p, device), b, a.steps, device)
                    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    print(f"{res:>5} {p:>5} {b:>5} {'out of memory':>31}", flush=True)
                    break
                sec = statistics.median(times)
                rate = b / sec
                base = base or rate
                tflops = rate * flops / 1e12
                mfu = tflops / ceilings[p]
                print(
                    f"{res:>5} {p:>5} {b:>5} {sec:8.4f} {rate:12.1f} {rate / base:6.2f} {peak:9.0f} "
                    f"{tflops:8.2f} {mfu:6.1%}",
                    flush=True,
                )
                report["cases"].append(
                    dict(
                        res=res,
                        generator=g_name,
                        precision=p,
                        batch=b,
                        s_per_step=sec,
                        image_steps_per_s=rate,
                        x_batch1=rate / base,
                        peak_mib=peak,
                        tflops=tflops,
                        mfu=mfu,
                        g_gmac_per_image=macs / 1e9,
                        step_gflop_per_image=flops / 1e9,
                    )
                )
        del G
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if a.quality:
        G, _ = toy_generator(32) if toy else generator(256)
        report["quality"] = quality(G.to(device), a.quality, a.quality_steps, device, a.precisions)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
