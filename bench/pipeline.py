"""`facebatch project` pipeline throughput and worker memory: 1 vs 2 local workers, small vs large dataset.

Synthetic 96x80 PNGs (smooth noise, so decode + centre crop + resize all run) are projected into the
64-px fixture generator with few steps, through the real runner and a real LocalCluster. Printed per case:
- wall: the whole run_stage call (cluster start, model load per worker, all shards, writes);
- img/s wall: images / wall;
- img/s steady: images / (last shard end - first shard start), from the shard markers (no start-up);
- peak worker RSS: max over shard markers of the worker's ru_maxrss. If it does not grow from the small to
  the large dataset, workers stream shards instead of accumulating them. Also shown after 25/50/75/100 % of
  the shards have finished: flat after the first shards = streaming.

    python bench/pipeline.py                                  # 64 and 1024 images, 1 and 2 workers, 1 step
    python bench/pipeline.py --quick                          # smoke run: 16 and 64 images, no perceptual net
    python bench/pipeline.py --sizes 64 --workers 1 --steps 2 # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

FIXTURE = (
    Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "reference" / "nvlabs_sg2ada_64_weights.pt"
)


def synthetic_images(folder: Path, n: int, seed: int = 0) -> None:
    """Smooth random colour fields, upsampled from 12x10 noise so they compress like photos, not static."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = folder / f"{i // 256:03d}"  # nested folders, as real datasets are
        sub.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8))
        small.resize((96, 80), Image.Resampling.BICUBIC).save(sub / f"img{i:05d}.png")


def run_case(images: Path, out: Path, workers: int, args) -> dict:
    from facebatch.invert.presets import load_preset
    from facebatch.nets.checkpoints import load_networks
    from facebatch.pipeline.cluster import ClusterOptions
    from facebatch.pipeline.discover import discover_images
    from facebatch.pipeline.rundir import RunDir
    from facebatch.pipeline.runner import run_stage
    from facebatch.stages.project import build_project_spec

    nets = load_networks(args.generator, device="cpu")
    cfg = load_preset(args.preset, {"steps": args.steps, "perceptual": args.perceptual, "w_avg_samples": 1000})
    items = discover_images(images)
    spec = build_project_spec(
        items=items,
        out_dir=out,
        nets=nets,
        projection=cfg,
        seed=0,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
    )
    cluster = ClusterOptions(workers=workers, threads_per_worker=args.threads_per_worker, device=args.device)
    start = time.perf_counter()
    summary = run_stage(spec, cluster, progress=False)
    wall = time.perf_counter() - start
    markers = RunDir(out, "latents").read_markers().values()
    first = min(m["finished_at"] - m["seconds"] for m in markers)
    # ru_maxrss only rises, so its value as shards finish shows whether a worker's memory follows the
    # number of shards done (accumulating) or levels off after the first shards (streaming).
    by_finish = [m["peak_rss_mb"] for m in sorted(markers, key=lambda m: m["finished_at"])]
    rss_trend = [max(by_finish[: max(1, round(len(by_finish) * q))]) for q in (0.25, 0.5, 0.75, 1.0)]
    last = max(m["finished_at"] for m in markers)
    return {
        "images": len(items),
        "workers": workers,
        "ok": summary.images_ok,
        "wall_s": round(wall, 1),
        "img_per_s_wall": round(len(items) / wall, 3),
        "img_per_s_steady": round(len(items) / (last - first), 3),
        "peak_worker_rss_mb": max(m["peak_rss_mb"] for m in markers),
        "rss_mb_at_25_50_75_100pct_shards": rss_trend,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "perceptual": args.perceptual,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default=str(FIXTURE))
    ap.add_argument("--sizes", default="64,1024", help="dataset sizes (images)")
    ap.add_argument("--workers", default="1,2", help="local worker counts")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--perceptual", default="stlpips-vgg", help="stlpips-vgg | none ...")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument(
        "--threads-per-worker", type=int, default=None, help="torch threads per worker (default cores/workers)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="one JSON line per case instead of a table")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (sizes 16,64, shard 8, batch 8, perceptual none): checks the bench, not a figure to report",
    )
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.shard_size, args.batch_size, args.perceptual = "16,64", 8, 8, "none"
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv), flush=True)
    print(
        f"settings: sizes {args.sizes}, workers {args.workers}, preset {args.preset}, steps {args.steps}, "
        f"perceptual {args.perceptual}, batch {args.batch_size}, shard {args.shard_size}, device {args.device}, "
        f"{os.cpu_count()} cores",
        flush=True,
    )

    rows = []
    with tempfile.TemporaryDirectory(prefix="facebatch-bench-") as tmp:
        for n in [int(s) for s in args.sizes.split(",")]:
            images = Path(tmp) / f"in{n}"
            synthetic_images(images, n)
            for w in [int(s) for s in args.workers.split(",")]:
                row = run_case(images, Path(tmp) / f"out{n}-{w}", w, args)
                rows.append(row)
                print(
                    json.dumps(row)
                    if args.json
                    else f"{row['images']:>6} images  {w} worker(s)  wall {row['wall_s']:>7.1f} s  "
                    f"{row['img_per_s_wall']:>7.3f} img/s wall  {row['img_per_s_steady']:>7.3f} img/s steady  "
                    f"peak worker RSS {row['peak_worker_rss_mb']:>7.1f} MB  (after 25/50/75/100 % of shards: "
                    f"{' / '.join(f'{v:.0f}' for v in row['rss_mb_at_25_50_75_100pct_shards'])} MB)",
                    flush=True,
                )
    sizes = sorted({r["images"] for r in rows})
    if len(sizes) > 1:  # streaming check: a worker's peak should not follow the dataset size
        for w in sorted({r["workers"] for r in rows}):
            by = {r["images"]: r["peak_worker_rss_mb"] for r in rows if r["workers"] == w}
            print(
                f"peak worker RSS, {w} worker(s): {by[sizes[0]]:.1f} MB at {sizes[0]} images -> "
                f"{by[sizes[-1]]:.1f} MB at {sizes[-1]} images ({by[sizes[-1]] - by[sizes[0]]:+.1f} MB)",
                flush=True,
            )


if __name__ == "__main__":
    main()
