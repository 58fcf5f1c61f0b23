"""Boundary fitting: time and memory against the number of latents, the estimator, C, and the latent space.

Parts (all by default):
  scale  facebatch's fit (LinearSVC, primal liblinear) on 10k / 100k / 500k synthetic 512-d latents with
         binary labels (every row used, 70% trains), beside InterFaceGAN's SVC(kernel="linear") and an
         SGD hinge classifier; each case in a fresh process so its peak RSS is its own.
  c      cosine to a planted normal against fixed C values and the default (C=None: choose_C's cross-validated
         pick), against the number of latents: why C is searched rather than fixed.
  space  W (mean over layers) vs flattened W+ vs per-layer on W+ codes built from the 64-px fixture
         generator's mapping network, for an attribute of the whole code and one of the coarse layers only.

Synthetic latents are "W-like": N(offset, diag(s^2)) with per-coordinate spreads from 0.2 to 1.5 and
|offset| ~ 20; the planted normal is weighted towards high-variance coordinates (real attributes
vary where the latents vary) and 10% of the labels are flipped.

    python bench/boundaries.py                               # everything: ~15 min on 2 busy cores
    python bench/boundaries.py --quick                       # smallest settings of every part: ~1 min
    python bench/boundaries.py --parts scale --sizes 10000,100000
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path

import numpy as np

D = 512
FLIP = 0.1
FIXTURE = (
    Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "reference" / "nvlabs_sg2ada_64_weights.pt"
)


def w_like(n_rows: int, seed: int, flip: float = FLIP):
    """(latents (N, 1, D) float32, labels, planted unit normal)."""
    rng = np.random.default_rng(seed)
    spread = np.exp(np.linspace(np.log(1.5), np.log(0.2), D))
    offset = np.random.default_rng(1234).standard_normal(D)
    normal = rng.standard_normal(D) * spread
    normal /= np.linalg.norm(normal)
    x = np.empty((n_rows, D), dtype=np.float32)
    score = np.empty(n_rows)
    for start in range(0, n_rows, 50_000):  # in chunks, so the data costs its own 2 KB a row and no more
        stop = min(start + 50_000, n_rows)
        noise = rng.standard_normal((stop - start, D)) * spread
        x[start:stop] = offset + noise
        score[start:stop] = noise @ normal
    y = (score > np.quantile(score, 0.6)).astype(float)  # 40% positives
    y = np.where(rng.random(n_rows) < flip, 1 - y, y)
    return x[:, None], y, normal


def _scale_case(args: dict) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier
    from sklearn.svm import SVC

    from facebatch.edit.fit import FitSettings, fit_boundary

    ws, y, normal = w_like(args["n"], seed=0)
    X = ws[:, 0]  # what features(ws, "w", [0]) returns, without its temporary copies
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if args["estimator"] == "facebatch":
        b = fit_boundary("bench", X, y, "binary", FitSettings(), num_ws=1)
        cos, acc = float(b.normal @ normal), b.info["metrics"]["val_accuracy"]
        converged = b.info["fit"]["converged"]
    else:
        # Same 70/30 split and centring as facebatch, only the estimator differs.
        from sklearn.model_selection import train_test_split

        train, val = train_test_split(np.arange(len(y)), train_size=0.7, stratify=y, random_state=0)
        mean = X[train].mean(0)
        est = (
            SVC(kernel="linear")
            if args["estimator"] == "svc-linear"
            else SGDClassifier(loss="hinge", alpha=1e-4, max_iter=50, tol=1e-4, random_state=0)
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            est.fit(X[train] - mean, y[train])
        converged = not caught
        coef = est.coef_.ravel()
        cos = float(coef @ normal / np.linalg.norm(coef))
        acc = float(np.mean(est.predict(X[val] - mean) == y[val]))
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(
        args, seconds=seconds, cos=cos, val_accuracy=acc, peak_rss_mb=rss, data_rss_mb=rss_data, converged=converged
    )


def part_scale(sizes: list[int], svc_max: int, sgd: bool) -> None:
    cases = [dict(n=n, estimator="facebatch") for n in sizes]
    cases += [dict(n=n, estimator="sgd-hinge") for n in sizes if sgd]
    cases += [dict(n=n, estimator="svc-linear") for n in (2000, 5000, 10000, 20000) if n <= svc_max]
    print("\n## scale: fit time on 512-d latents (binary labels, 70% of rows train)\n")
    print(
        "| estimator | latents | train rows | fit s | RSS before fit MB | peak RSS MB | cos to planted | val acc "
        "| converged |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    ctx = mp.get_context("spawn")
    for case in cases:
        with ctx.Pool(1) as pool:
            r = pool.apply(_scale_case, (case,))
        print(
            f"| {r['estimator']} | {r['n']:,} | {int(0.7 * r['n']):,} | {r['seconds']:.1f} | {r['data_rss_mb']:.0f} | "
            f"{r['peak_rss_mb']:.0f} | "
            f"{r['cos']:.3f} | {r['val_accuracy']:.3f} | {r['converged']} |",
            flush=True,
        )


def part_c(sizes: list[int], seeds: int) -> None:
    from facebatch.edit.fit import C_GRID, FitSettings, features, fit_boundary

    grid = (*C_GRID, 1.0, None)  # None = the default: cross-validated choice
    print(f"\n## C: cosine to the planted normal (mean of {seeds} seeds; val accuracy in brackets)\n")
    print("| latents | " + " | ".join("default (CV)" if c is None else f"C={c:g}" for c in grid) + " |")
    print("|---:|" + "---:|" * len(grid))
    for n in sizes:
        cells = []
        for C in grid:
            cos, acc, secs = [], [], []
            for seed in range(seeds):
                ws, y, normal = w_like(n, seed)
                t0 = time.perf_counter()
                b = fit_boundary("c", features(ws, "w", [0]), y, "binary", FitSettings(C=C, seed=seed), num_ws=1)
                secs.append(time.perf_counter() - t0)
                cos.append(b.normal @ normal)
                acc.append(b.info["metrics"]["val_accuracy"])
            cells.append(f"{np.mean(cos):.3f} ({np.mean(acc):.3f}, {np.mean(secs):.1f}s)")
        print(f"| {n:,} | " + " | ".join(cells) + " |", flush=True)


@functools.lru_cache(maxsize=1)
def _fixture_G():
    from facebatch.nets.checkpoints import load_networks

    return load_networks(FIXTURE, with_d=False).G


def _fixture_w(n_rows: int, seed: int) -> tuple[np.ndarray, int]:
    import torch

    G = _fixture_G()
    z = torch.from_numpy(np.random.RandomState(seed).randn(n_rows, G.z_dim).astype(np.float32))
    with torch.no_grad():
        return G.mapping(z, None)[:, 0].numpy(), G.num_ws


def part_space(sizes: list[int], seeds: int, jitter: float) -> None:
    """Which space recovers the edit direction best, measured as cosine in W+ (the space edits happen in)."""
    from facebatch.edit.fit import FitSettings, features, fit_boundary

    print(
        f"\n## space: W+ codes from the fixture mapping (+{jitter} per-layer jitter, as the fixture's W+ example);"
        f" cosine of the implied W+ edit to the planted one (val accuracy), mean of {seeds} seeds\n"
    )
    print("| attribute lives in | latents | w (all layers) | w (layers 0-3) | wplus | layer |")
    print("|---|---:|---:|---:|---:|---:|")
    for scenario in ("whole code", "layers 0-3"):
        for n in sizes:
            results = {k: [] for k in ("w", "w03", "wplus", "layer")}
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                wa, num_ws = _fixture_w(n, seed)
                cov_sqrt = np.linalg.cholesky(np.cov(wa.T) + 1e-9 * np.eye(D))
                normal = cov_sqrt @ rng.standard_normal(D)  # where the latents vary, as real attributes do
                normal /= np.linalg.norm(normal)
                ws = np.repeat(wa[:, None], num_ws, axis=1)
                rows = list(range(num_ws))
                if scenario == "layers 0-3":
                    wb, _ = _fixture_w(n, seed + 1000)  # the other layers come from another w: style mixing
                    ws[:, 4:] = wb[:, None]
                    rows = [0, 1, 2, 3]
                ws = (ws + jitter * rng.standard_normal(ws.shape)).astype(np.float32)
                score = (wa - wa.mean(0)) @ normal
                y = (score > 0).astype(float)
                y = np.where(rng.random(n) < FLIP, 1 - y, y)
                true = np.zeros((num_ws, D))
                true[rows] = normal
                true /= np.linalg.norm(true)
                for key, space, layers in (
                    ("w", "w", list(range(num_ws))),
                    ("w03", "w", [0, 1, 2, 3]),
                    ("wplus", "wplus", list(range(num_ws))),
                    ("layer", "layer", list(range(num_ws))),
                ):
                    b = fit_boundary(
                        key,
                        features(ws, space, layers),
                        y,
                        "binary",
                        FitSettings(space=space, layers=layers, seed=seed),
                        num_ws=num_ws,
                    )
                    edit = b.raw_direction()
                    results[key].append(
                        (float(np.sum(edit * true) / np.linalg.norm(edit)), b.info["metrics"]["val_accuracy"])
                    )
            cells = [
                f"{np.mean([c for c, _ in results[k]]):.3f} ({np.mean([a for _, a in results[k]]):.3f})"
                for k in ("w", "w03", "wplus", "layer")
            ]
            print(f"| {scenario} | {n:,} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="scale,c,space")
    ap.add_argument("--sizes", default="10000,100000,500000", help="latents for the scale part")
    ap.add_argument("--svc-max", type=int, default=10000, help="largest size tried with SVC(kernel='linear')")
    ap.add_argument("--no-sgd", action="store_true")
    ap.add_argument("--c-sizes", default="1000,4000,20000")
    ap.add_argument("--space-sizes", default="2000,10000")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jitter", type=float, default=0.3)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 10k latents for scale (SVC to 2k), C and space at 1k/2k with one seed",
    )
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.svc_max, args.c_sizes, args.space_sizes, args.seeds = "10000", 2000, "1000", "2000", 1
    import platform
    import shlex
    import sys

    import sklearn

    print("# bench/boundaries.py")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"scikit-learn {sklearn.__version__}, numpy {np.__version__}"
    )
    print(f"settings: {vars(args)}")
    parts = args.parts.split(",")
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    if "scale" in parts:
        part_scale(ints(args.sizes), args.svc_max, not args.no_sgd)
    if "c" in parts:
        part_c(ints(args.c_sizes), args.seeds)
    if "space" in parts:
        part_space(ints(args.space_sizes), args.seeds, args.jitter)


if __name__ == "__main__":
    main()
