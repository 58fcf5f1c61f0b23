"""facebatch's `nvlabs` preset against a per-step reproduction of the official NVlabs projector, at equal work.

The official code (stylegan2-ada-pytorch ``projector.py``) cannot be installed here, so its per-step
work is reproduced in `official_steps` below, line for line:
- W space: one ``w_opt [1, 1, 512]`` tiled to all layers, plus ``randn * w_std * 0.05 * ramp^2`` noise;
- the synthesis runs the official *fused* modulated convolution: one modulated + demodulated weight
  per sample ([N, out, in, 3, 3]) run as a grouped convolution (``bench/synthesis.py``'s
  `grouped_modulated_conv2d`, swapped into facebatch's generator for the official side only; the
  up-sampling layers go through the same transposed conv + FIR filter as ours, as the official
  ``conv2d_resample`` does);
- every noise buffer optimised jointly (``noise_const`` maps as leaves), the multi-scale
  autocorrelation regulariser (weight 1e5) on them every step, renormalised after every step;
- ``(img + 1) * 127.5``, area-downsampled to 256 px if larger, into the VGG16 LPIPS features of
  the target (computed once) and of the render, ``(t - s).square().sum()``;
- Adam (0.9, 0.999) with the lr ramp set in the param group every step, and the official per-step
  host syncs: ``float(dist)`` / ``float(loss)`` for the log line and ``w_out[step] = w_opt[0]``.
Both sides use the same perceptual network, facebatch's ``stlpips-vgg`` (a VGG16: the official
LPIPS VGG16 trunk needs torchvision's ImageNet file, which is not on this machine; the
shift-tolerant trunk has the same convolutions plus a cheap 3x3 blur per pooling), the same random
config-f generator (channel_base 16384, channel_max 512), batch 1, the same step count.

Timing: rounds interleave the variants (machine load hits each alike); each variant runs `--steps`
optimisation steps per round, timed from the end of its first step to the end of its last; the
figure kept per variant is its best (min-of-rounds) seconds per step. One thread
(``torch.set_num_threads(1)``, OMP_NUM_THREADS=1) unless told otherwise.

Variants (facebatch `nvlabs` preset, each lever alone on top of the fp32 reference):
  official       the reproduction above
  fb-fp32        facebatch nvlabs preset, autocast=none (the fp32 reference)
  fb-bf16        autocast=bf16 (synthesis + VGG trunk under bfloat16 autocast)
  fb-cl          channels_last weights (activations follow) for G and the VGG
  fb-bf16-cl     both
--quality also projects a few G samples (W-space samples, nvlabs preset) with autocast none vs bf16
and prints the final PSNR of each.

    OMP_NUM_THREADS=1 python bench/projector_vs_official.py                  # 256 px, 4 rounds x 3 steps
    OMP_NUM_THREADS=1 python bench/projector_vs_official.py --res 64 --rounds 2 --steps 2   # smoke
    OMP_NUM_THREADS=1 python bench/projector_vs_official.py --res 64 --quality 3 --quality-steps 200
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthesis import grouped_modulated_conv2d  # noqa: E402

import facebatch.nets.stylegan2 as sg2  # noqa: E402
from facebatch.invert.presets import load_preset  # noqa: E402
from facebatch.invert.projector import Projector, w_stats  # noqa: E402
from facebatch.nets.cpu_memory import keep_freed_memory  # noqa: E402
from facebatch.nets.perceptual import build_perceptual  # noqa: E402

PERCEPTUAL = "stlpips-vgg"


def generator(res: int):
    torch.manual_seed(0)
    G = sg2.Generator(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=res,
        img_channels=3,
        mapping_kwargs={"num_layers": 8},
        synthesis_kwargs={"channel_base": 16384, "channel_max": 512, "conv_clamp": 256},
    )
    G = G.eval().requires_grad_(False)
    # A random generator's noise_strength is 0, which would make the noise maps' gradients zero;
    # trained ones are not, so give them a trained-like value on both sides alike.
    for block in G.synthesis.blocks():
        for layer in block.noise_layers():
            layer.noise_strength.fill_(0.1)
    return G


@contextlib.contextmanager
def official_conv():
    saved = sg2.modulated_conv2d
    sg2.modulated_conv2d = grouped_modulated_conv2d
    try:
        yield
    finally:
        sg2.modulated_conv2d = saved


def official_steps(G, vgg, target, steps: int, stamps: list[float], seed: int = 0, observe=None) -> None:
    """The official projector's loop (stylegan2-ada-pytorch projector.py), batch 1, W space, 1000-step schedule.

    `observe(images)`, if given, sees each step's render (bench/time_to_quality.py measures it there).
    """
    num_steps_schedule = 1000
    initial_lr, lr_rampdown, lr_rampup, noise_ramp, w_noise_factor, reg_w = 0.1, 0.25, 0.05, 0.75, 0.05, 1e5
    w_avg, w_std = w_stats(G, 2000, 123)  # set-up, not timed (official: 10000 samples)
    noise_bufs = [
        layer.noise_const.detach().clone()[None, None] for b in G.synthesis.blocks() for layer in b.noise_layers()
    ]
    with torch.no_grad():
        t_img = (target + 1) * (255 / 2)
        if t_img.shape[2] > 256:
            t_img = F.interpolate(t_img, size=(256, 256), mode="area")
        target_features = vgg.features(t_img / 127.5 - 1)  # official: vgg16(target, return_lpips=True)
    w_opt = w_avg.reshape(1, 1, -1).clone().requires_grad_(True)
    w_out = torch.zeros([steps] + list(w_opt.shape[1:]))
    for buf in noise_bufs:
        buf.requires_grad_(True)
    opt = torch.optim.Adam([w_opt] + noise_bufs, betas=(0.9, 0.999), lr=initial_lr)
    for buf in noise_bufs:
        with torch.no_grad():
            buf[:] = torch.randn_like(buf)
    gen = torch.Generator().manual_seed(seed)
    with official_conv():
        for step in range(steps):
            t = step / num_steps_schedule
            w_noise_scale = w_std * w_noise_factor * max(0.0, 1.0 - t / noise_ramp) ** 2
            lr_ramp = min(1.0, (1.0 - t) / lr_rampdown)
            lr_ramp = 0.5 - 0.5 * np.cos(lr_ramp * np.pi)
            lr_ramp = lr_ramp * min(1.0, t / lr_rampup)
            for g in opt.param_groups:
                g["lr"] = initial_lr * lr_ramp
            w_noise = torch.randn(w_opt.shape, generator=gen) * w_noise_scale
            ws = (w_opt + w_noise).repeat([1, G.num_ws, 1])
            synth = G.synthesis(ws, noise=noise_bufs)
            if observe is not None:
                observe(synth)
            synth = (synth + 1) * (255 / 2)
            if synth.shape[2] > 256:
                synth = F.interpolate(synth, size=(256, 256), mode="area")
            synth_features = vgg.features(synth / 127.5 - 1)
            dist = vgg.distance_features(synth_features, target_features).sum()
            reg_loss = 0.0
            for v in noise_bufs:
                noise = v  # [1, 1, H, W]
                while True:
                    reg_loss += (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
                    reg_loss += (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
                    if noise.shape[2] <= 8:
                        break
                    noise = F.avg_pool2d(noise, kernel_size=2)
            loss = dist + reg_loss * reg_w
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            # logprint: the official loop formats both losses every step (two host syncs)
            _ = f"step {step + 1:>4d}/{steps}: dist {float(dist.detach()):<4.2f} loss {float(loss.detach()):<5.2f}"
            w_out[step] = w_opt.detach()[0]
            with torch.no_grad():
                for buf in noise_bufs:
                    buf -= buf.mean()
                    buf *= buf.square().mean().rsqrt()
            stamps.append(time.perf_counter())


def facebatch_steps(G, target, steps: int, stamps: list[float], autocast: str, channels_last: bool) -> None:
    settings = {"steps": 1000, "perceptual": PERCEPTUAL, "w_avg_samples": 2000}
    cfg = load_preset("nvlabs", {**settings, "autocast": autocast, "channels_last": channels_last})
    projector = Projector(G, None, cfg)

    class Stop(Exception):
        pass

    def tick(step, total, losses):
        stamps.append(time.perf_counter())
        if len(stamps) >= steps:
            raise Stop  # the 1000-step schedule, cut after `steps` steps (scores/render not timed)

    with contextlib.suppress(Stop):
        projector.project(target, [0], callback=tick)


def set_memory_format(G, vgg, channels_last: bool) -> None:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    G.to(memory_format=fmt)
    vgg.to(memory_format=fmt)


VARIANTS = {
    "official": dict(kind="official", cl=False),
    "fb-fp32": dict(kind="fb", autocast="none", cl=False),
    "fb-bf16": dict(kind="fb", autocast="bf16", cl=False),
    "fb-cl": dict(kind="fb", autocast="none", cl=True),
    "fb-bf16-cl": dict(kind="fb", autocast="bf16", cl=True),
}


def time_variant(name, G, vgg, target, steps) -> float:
    spec = VARIANTS[name]
    set_memory_format(G, vgg, spec["kind"] == "official" and spec["cl"])  # facebatch: its own setting
    stamps: list[float] = []
    if spec["kind"] == "official":
        official_steps(G, vgg, target, steps + 1, stamps)
    else:
        facebatch_steps(G, target, steps + 1, stamps, spec["autocast"], spec["cl"])
    set_memory_format(G, vgg, False)
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def quality(G, n: int, steps: int, preset: str) -> None:
    """Project n W-space samples of G (`preset`, `steps` steps) in fp32 and in bf16 + channels_last; final scores."""
    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(7).randn(n, G.z_dim)).float()
        targets = G.synthesis(G.mapping(z, None), noise_mode="const").clamp(-1, 1)
    rows = {}
    for label, ac, cl in (("fp32", "none", False), ("bf16", "bf16", True)):
        settings = {"steps": steps, "perceptual": PERCEPTUAL, "w_avg_samples": 2000}
        cfg = load_preset(preset, {**settings, "autocast": ac, "channels_last": cl})
        t0 = time.perf_counter()
        res = Projector(G, None, cfg).project(targets, list(range(n)))
        rows[label] = (res.scores, time.perf_counter() - t0)
        G.to(memory_format=torch.contiguous_format)
    print(
        f"\nquality: {n} G samples ({G.img_resolution} px), preset {preset}, {steps} steps; "
        "fp32 vs bf16 + channels_last"
    )
    for key in ("psnr", "ssim", "perceptual"):
        fa, fb = np.asarray(rows["fp32"][0][key]), np.asarray(rows["bf16"][0][key])
        print(
            f"  {key:>10}: fp32 {np.array2string(fa, precision=3)}  bf16 {np.array2string(fb, precision=3)}  "
            f"bf16 - fp32: mean {np.mean(fb - fa):+.3f}, max |diff| {np.max(np.abs(fa - fb)):.3f}"
        )
    print(f"  wall: fp32 {rows['fp32'][1]:.1f} s, bf16 {rows['bf16'][1]:.1f} s")


def lever_table(best: dict[str, float]) -> None:
    """Each lever's effect on facebatch's fp32 reference, and whether it is kept (pays >= 3 %)."""

    def measured(variant: str, base: str = "fb-fp32") -> str:
        if variant not in best or base not in best:
            return "not run"
        gain = best[base] / best[variant]
        return f"x{gain:.2f} vs {base} -> {'kept' if gain >= 1.03 else 'dropped'}"

    print("\nlevers (one at a time):")
    rows = [
        ("bf16 autocast (synthesis + VGG trunk)", measured("fb-bf16")),
        ("channels_last (fp32)", measured("fb-cl")),
        ("channels_last on top of bf16", measured("fb-bf16-cl", "fb-bf16")),
        ("features only to the deepest layer used", "already so: the trunk stops at relu5_3, LPIPS's last tap"),
        ("target features once per batch", "already so: computed before the loop"),
        ("no per-step host sync", "no effect on CPU (nothing to sync); the progress callback reads each step"),
        ("torch.compile", "x0.97 at 64 px (bench/torch_compile.py; 209 s to compile) -> dropped"),
    ]
    for name, verdict in rows:
        print(f"  {name:<42} {verdict}")
    if "official" in best:
        fast = min((v for v in best if v != "official"), key=best.get)
        print(f"final: {fast} {best['official'] / best[fast]:.2f}x the official reproduction's image-steps/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant per round (+1 untimed)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quality", type=int, default=0, help="also run the bf16 quality check on this many G samples")
    ap.add_argument("--quality-steps", type=int, default=200)
    ap.add_argument("--quality-res", type=int, default=64, help="generator resolution of the quality check")
    ap.add_argument("--quality-preset", nargs="+", default=["nvlabs", "default"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    kept = keep_freed_memory()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, keep_freed_memory {kept}, "
        f"{a.res} px config-f random G, batch 1, perceptual {PERCEPTUAL} on both sides"
    )
    G = generator(a.res)
    vgg = build_perceptual(PERCEPTUAL)
    target = torch.rand(1, 3, a.res, a.res, generator=torch.Generator().manual_seed(1)) * 2 - 1
    best = {v: math.inf for v in a.variants}
    if not a.rounds:
        best = {}
    for r in range(a.rounds):
        for v in a.variants:
            best[v] = min(best[v], time_variant(v, G, vgg, target, a.steps))
        print(f"round {r + 1}: " + ", ".join(f"{v} {1 / best[v]:.3f}" for v in a.variants), flush=True)
    if a.rounds:
        print(f"\nimage-steps/s (best of {a.rounds} rounds x {a.steps} steps), {a.res} px, batch 1")
        print(f"{'variant':>12} {'s/step':>8} {'img-steps/s':>12} {'x official':>11} {'x fb-fp32':>10}")
        for v in a.variants:
            rel_o = best["official"] / best[v] if "official" in best else float("nan")
            rel_f = best["fb-fp32"] / best[v] if "fb-fp32" in best else float("nan")
            print(f"{v:>12} {best[v]:8.3f} {1 / best[v]:12.3f} {rel_o:11.2f} {rel_f:10.2f}")
        lever_table(best)
    if a.quality:
        Gq = G if a.quality_res == a.res else generator(a.quality_res)
        for preset in a.quality_preset:
            quality(Gq, a.quality, a.quality_steps, preset)


if __name__ == "__main__":
    main()
