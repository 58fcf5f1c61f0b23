"""Face alignment cost: detection + landmarks, the FFHQ warp, and `facebatch align` through the shard runner.

Parts (all by default), on ../shared/data:
  detect  seconds per image for dlib HOG detection + 68 landmarks on three kinds of input: CelebA-HQ
          (1024 px, scanned without upsampling), CelebA crops (178x218, upsampled once) and the
          astronaut (512 px portrait, upsampled once).
  warp    seconds per FFHQ warp (shrink, crop, blurred-reflection pad, QUAD at 4x, Lanczos) by output size,
          for a face inside the photo and one whose crop square leaves it (the padding path).
  stage   images/s of the whole `align` stage (decode, detect, warp, PNG write, Parquet) through run_stage,
          in-process (--workers 0) and on a local Dask cluster.

    python bench/align.py                     # every part, 38 + 100 images, sizes 256/1024, 2 workers
    python bench/align.py --quick             # smallest settings of every part: well under a minute
    python bench/align.py --parts warp --sizes 256 512 1024
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def per_call(fn, repeats: int) -> float:
    fn()  # warm-up (and, for the first call, the predictor load)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def bench_detect(n: int) -> None:
    from facebatch.alignment.api import find_faces

    sets = {
        "CelebA-HQ 1024px": sorted((DATA / "faces_aligned").glob("*.jpg"))[:n],
        "CelebA 178x218": sorted((DATA / "celeba10k" / "images").glob("*.jpg"))[:n],
        "astronaut 512px": [DATA / "faces_unaligned" / "astronaut.png"],
    }
    for label, files in sets.items():
        images = [Image.open(f).convert("RGB") for f in files]
        found = [len(find_faces(im)) for im in images]  # also warms up
        t0 = time.perf_counter()
        for im in images:
            find_faces(im)
        dt = (time.perf_counter() - t0) / len(images)
        print(
            f"detect+landmarks  {label:18s} {dt * 1000:8.1f} ms/image  ({len(images)} images, "
            f"{sum(f > 0 for f in found)} with a face)",
            flush=True,
        )


def bench_warp(sizes: list[int], repeats: int) -> None:
    from facebatch.alignment.api import find_faces
    from facebatch.alignment.ffhq import ffhq_quad, warp_quad

    photo = Image.open(DATA / "faces_unaligned" / "astronaut.png").convert("RGB")
    quad = ffhq_quad(find_faces(photo)[0].landmarks)
    cases = {"inside the photo": (photo, quad), "padded (square leaves it)": (photo, quad - quad.mean(0) + [40, 40])}
    for size in sizes:
        for label, (img, q) in cases.items():
            dt = per_call(lambda: warp_quad(img, q, size), repeats)
            print(f"warp  {size:5d} px  {label:26s} {dt * 1000:8.1f} ms/warp", flush=True)


def bench_stage(n: int, size: int, workers: list[int]) -> None:
    from facebatch.pipeline.cluster import ClusterOptions
    from facebatch.pipeline.discover import discover_images
    from facebatch.pipeline.runner import run_stage
    from facebatch.stages.align import build_align_spec

    with tempfile.TemporaryDirectory(prefix="facebatch-align-bench-") as tmp:
        inp = Path(tmp) / "in"
        inp.mkdir()
        for f in sorted((DATA / "faces_aligned").glob("*.jpg"))[:n]:
            (inp / f.name).symlink_to(f)
        items = discover_images(inp)
        for w in workers:
            out = Path(tmp) / f"out{w}"
            spec = build_align_spec(
                items=items,
                out_dir=out,
                size=size,
                backend="dlib",
                faces="largest",
                min_score=None,
                shard_size=max(1, len(items) // max(2 * w, 1)),
            )
            cluster = ClusterOptions(workers=w, threads_per_worker=1, device="cpu")
            t0 = time.perf_counter()
            summary = run_stage(spec, cluster, progress=False)
            wall = time.perf_counter() - t0
            print(
                f"stage  workers={w}  {len(items)} CelebA-HQ images at {size} px: {wall:6.1f} s wall, "
                f"{len(items) / wall:5.2f} images/s (incl. cluster start), {summary.images_error} errors",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["detect", "warp", "stage"], choices=["detect", "warp", "stage"])
    ap.add_argument("--images", type=int, default=38, help="images per detect set and for the stage")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024], help="warp output sizes")
    ap.add_argument("--stage-size", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="4 images, 256 px, 1 repeat, in-process stage only")
    args = ap.parse_args()
    if args.quick:
        args.images, args.sizes, args.repeats, args.workers = 4, [256], 1, [0]
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv), flush=True)
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: this benchmark runs on the shared test photos")
    if "detect" in args.parts:
        bench_detect(args.images)
    if "warp" in args.parts:
        bench_warp(args.sizes, args.repeats)
    if "stage" in args.parts:
        bench_stage(args.images, args.stage_size, args.workers)


if __name__ == "__main__":
    main()
