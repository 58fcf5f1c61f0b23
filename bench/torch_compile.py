"""Does torch.compile pay for projection on the CPU? One lever of bench/projector_vs_official.py's table.

Times the projection step's heavy part (celeba64 synthesis + the stlpips-vgg trunk, forward and
backward w.r.t. W+, batch 4, one thread) eager and under `torch.compile` (inductor, default mode),
then eager again, and prints the compile time and the speed-up.

    OMP_NUM_THREADS=1 python bench/torch_compile.py
"""

from __future__ import annotations

import time

import torch

from facebatch import load_generator
from facebatch.nets.perceptual import build_perceptual


def main() -> None:
    torch.set_num_threads(1)
    G = load_generator("celeba64").G
    vgg = build_perceptual("stlpips-vgg")
    batch = 4
    ws0 = G.mapping(torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(0)), None).detach()
    target = torch.rand(batch, 3, G.img_resolution, G.img_resolution) * 2 - 1
    target_features = vgg.features(target)

    def step(synthesis, features) -> None:
        ws = ws0.clone().requires_grad_(True)
        img = synthesis(ws, noise_mode="const")
        loss = (img - target).square().mean() + vgg.distance_features(features(img), target_features).sum()
        loss.backward()

    def seconds(synthesis, features, n: int = 6) -> float:
        step(synthesis, features)
        t0 = time.perf_counter()
        for _ in range(n):
            step(synthesis, features)
        return (time.perf_counter() - t0) / n

    eager = seconds(G.synthesis, vgg.features)
    t0 = time.perf_counter()
    synthesis, features = torch.compile(G.synthesis), torch.compile(vgg.features)
    step(synthesis, features)
    compile_s = time.perf_counter() - t0
    compiled = seconds(synthesis, features)
    eager_again = seconds(G.synthesis, vgg.features)
    eager = min(eager, eager_again)
    print(f"torch {torch.__version__}, 1 thread, celeba64 synthesis + stlpips-vgg, fwd+bwd, batch {batch}")
    speedup = eager / compiled
    print(f"eager {eager:.3f} s/step, compiled {compiled:.3f} s/step (compile {compile_s:.0f} s): x{speedup:.2f}")


if __name__ == "__main__":
    main()
