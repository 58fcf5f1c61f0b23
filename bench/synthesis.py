"""Synthesis forward+backward throughput (images/s) by batch size and resolution.

Config-f widths (channel_base 16384, channel_max 512), random weights, gradient w.r.t. the W+ code
only (as in projection). `--baseline grouped` also times the official per-sample grouped-conv
modulation on the same machine, for comparison.

    python bench/synthesis.py                      # 64 and 256 px, batch 1/4/8, CPU (+ CUDA if present)
    python bench/synthesis.py --res 256 --batches 1 8 --baseline grouped
    FACEBATCH_GLIBC_MALLOC=default python bench/synthesis.py   # glibc's default allocator settings
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import facebatch.nets.stylegan2 as sg2
from facebatch.nets.cpu_memory import keep_freed_memory
from facebatch.nets.ops import conv2d_resample
from facebatch.nets.stylegan2 import Generator


def grouped_modulated_conv2d(
    x, weight, styles, noise=None, up=1, padding=0, resample_filter=None, demodulate=True, flip_weight=True
):
    """The official fused path: one modulated weight per sample, run as a grouped convolution."""
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    if up == 1:
        y = F.conv2d(x, w, padding=padding, groups=n)
    else:  # same resampling as ours, grouped
        outs = [
            conv2d_resample(
                x[:, i * in_ch : (i + 1) * in_ch],
                w[i * out_ch : (i + 1) * out_ch],
                f=resample_filter,
                up=up,
                padding=padding,
                flip_weight=flip_weight,
            )
            for i in range(n)
        ]
        y = torch.cat(outs, dim=1)
    y = y.reshape(n, -1, *y.shape[2:])
    return y + noise if noise is not None else y


def build(res: int, device: str) -> Generator:
    G = Generator(
        z_dim=512,
        c_dim=0,
        w_dim=512,
        img_resolution=res,
        img_channels=3,
        mapping_kwargs={"num_layers": 8},
        synthesis_kwargs={"channel_base": 16384, "channel_max": 512},
    )
    return G.to(device).eval().requires_grad_(False)


def step_time(G: Generator, batch: int, device: str, repeats: int) -> float:
    ws = torch.randn(batch, G.num_ws, G.w_dim, device=device, requires_grad=True)

    def step():
        img = G.synthesis(ws, noise_mode="const")
        img.square().mean().backward()

    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--res", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", choices=["none", "grouped"], default="none")
    ap.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    args = ap.parse_args()
    kept = keep_freed_memory()  # what every facebatch command does on CPU (facebatch/nets/cpu_memory.py)
    print(
        f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, CUDA {torch.cuda.is_available()}, "
        f"freed memory kept in process: {kept} (FACEBATCH_GLIBC_MALLOC=default to compare)"
    )
    impls = [("ours", sg2.modulated_conv2d)] + (
        [("grouped", grouped_modulated_conv2d)] if args.baseline == "grouped" else []
    )
    ours_fn = sg2.modulated_conv2d
    print(f"{'device':>6} {'impl':>8} {'res':>4} {'batch':>5} {'s/step':>8} {'s/img':>8} {'img/s':>8}")
    try:
        for device in args.devices:
            for res in args.res:
                G = build(res, device)
                for name, fn in impls:
                    sg2.modulated_conv2d = fn
                    for b in args.batches:
                        t = step_time(G, b, device, args.repeats)
                        print(f"{device:>6} {name:>8} {res:>4} {b:>5} {t:8.3f} {t / b:8.3f} {b / t:8.2f}", flush=True)
    finally:
        sg2.modulated_conv2d = ours_fn


if __name__ == "__main__":
    main()
