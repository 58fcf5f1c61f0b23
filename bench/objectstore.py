"""What an object store costs a projection run, measured against moto's S3 server on a loopback port.

    python bench/objectstore.py [--images 32] [--shard-size 16] [--out bench/out/objectstore.json]

1. Reading images (`pipeline.images.read_bytes`, what a worker does per image) and writing latents parts
   (`table.atomic_write_table`, one part per shard) on local disk vs s3:// : per-file overhead and MB/s.
2. `facebatch project` on the same images (CelebA val photos) and the built-in celeba64 generator, from and to
   local disk vs s3:// (`--workers 0`, one torch thread), at the `fast` preset and at the `encoder` preset
   (encoder + a short refinement, the one most likely to be I/O-bound): wall time per shard and the share of a
   shard's time spent on I/O (reads + part + marker + lock, measured by the difference to the local run and
   by the I/O timings of 1.).

A loopback moto server has no network latency and no bandwidth limit of a real bucket: its figures are a
lower bound on the overhead of the facebatch side (fsspec, s3fs, one PUT per object), not of S3 itself.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("moto did not start")


def _val_images(n: int) -> list[Path]:
    import csv

    data = SHARED / "data" / "celeba10k"
    with open(data / "split.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("split") == "val"]
    key = next(k for k in rows[0] if k != "split")
    return [data / "images" / rows[i][key] for i in range(n)]


def _timed(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def io_micro(images: list[Path], local: Path, bucket: str) -> dict:
    import numpy as np
    import pyarrow as pa

    from facebatch.pipeline import storage
    from facebatch.pipeline.images import read_bytes
    from facebatch.pipeline.table import atomic_write_table, latent_array, latents_schema

    total = sum(p.stat().st_size for p in images)
    out: dict = {"images": len(images), "image_bytes_total": total}
    for kind, base in (("local", str(local)), ("s3", f"s3://{bucket}")):
        paths = [f"{base}/in/{p.name}" for p in images]
        seconds = _timed(lambda: [read_bytes(p) for p in paths], repeat=3)
        out[f"read_{kind}"] = {
            "seconds_per_image": seconds / len(paths),
            "MB_per_s": total / seconds / 1e6,
        }
        rows = 256
        ws = np.random.default_rng(0).standard_normal((rows, 10, 512)).astype(np.float32)
        schema = latents_schema(10, 512)
        table = pa.table(
            {
                "image_id": pa.array([f"{i}.jpg" for i in range(rows)]),
                "status": pa.array(["ok"] * rows),
                "error": pa.nulls(rows, pa.string()),
                "w": latent_array(ws, rows, (10, 512)),
            },
            schema=schema,
        )
        target = storage.location(f"{base}/parts/part-00000.parquet")
        seconds = _timed(lambda: atomic_write_table(target, table), repeat=3)
        size = storage.size(target)
        out[f"write_part_{kind}"] = {"rows": rows, "bytes": size, "seconds": seconds, "MB_per_s": size / seconds / 1e6}
    return out


def project_runs(images: int, shard_size: int, local: Path, bucket: str, options: list[str]) -> dict:
    results = {}
    for preset, extra in (("fast", []), ("encoder", [])):
        for kind, base in (("local", str(local)), ("s3", f"s3://{bucket}")):
            out = f"{base}/out-{preset}"
            cmd = [
                sys.executable,
                "-m",
                "facebatch",
                "project",
                f"{base}/in",
                "-g",
                "celeba64",
                "-o",
                out,
                "--preset",
                preset,
                "--workers",
                "0",
                "--shard-size",
                str(shard_size),
                "--quiet",
                *extra,
                *options,
            ]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"{kind} {preset}: {proc.stderr[-800:]}")
            from facebatch.pipeline import storage

            record = json.loads(storage.location(f"{out}/_run.json").read_text())
            shards = record["plan"]["shards"]
            results[f"{preset}_{kind}"] = {
                "wall_seconds": wall,
                "images": images,
                "shards": shards,
                "shard_seconds_mean": record["summary"]["wall_seconds"] / shards,
                "run_seconds": record["summary"]["wall_seconds"],
            }
        loc, s3 = results[f"{preset}_local"], results[f"{preset}_s3"]
        results[f"{preset}_s3_overhead_per_shard_s"] = (s3["run_seconds"] - loc["run_seconds"]) / s3["shards"]
        results[f"{preset}_s3_io_share"] = max(0.0, s3["run_seconds"] - loc["run_seconds"]) / s3["run_seconds"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "objectstore.json")
    args = parser.parse_args()

    import boto3

    proc, endpoint = _moto()
    try:
        bucket = "bench"
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"
        )
        s3.create_bucket(Bucket=bucket)
        images = _val_images(args.images)
        work = Path(tempfile.mkdtemp(prefix="fb-objectstore-"))
        (work / "in").mkdir()
        for p in images:
            s3.upload_file(str(p), bucket, f"in/{p.name}")
            os.symlink(p, work / "in" / p.name)
        options = [
            "--storage-option",
            f"endpoint_url={endpoint}",
            "--storage-option",
            "key=k",
            "--storage-option",
            "secret=s",
        ]
        from facebatch.pipeline import storage

        storage.configure(storage.parse_options(options[1::2]))
        report = {
            "machine": os.uname().nodename,
            "torch_threads": 1,
            "server": "moto standalone S3 server on loopback",
            "io": io_micro(images, work, bucket),
            "project": project_runs(args.images, args.shard_size, work, bucket, options),
        }
    finally:
        proc.terminate()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
