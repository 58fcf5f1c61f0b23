"""Where should shards run by default? In this process, or on a local Dask cluster of how many workers?

Times `facebatch project` end to end (process start, model load, cluster start, projection, parts
written) for the same faces under several layouts, on 1 and 2 cores emulated with the CPU affinity mask
(`taskset`), with the machine idle and with another process busy on one core (`--load`: a CPU-bound
Python loop pinned beside). What the default layout rule in facebatch/pipeline/cluster.py rests on.

    python bench/workers.py                  # writes bench/out/workers.{json,md}
    python bench/workers.py --faces 4 --steps 30 --cores 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "data" / "celeba10k" / "images"


def layouts(cores: int) -> list[tuple[str, list[str], dict]]:
    """(name, extra project arguments, environment) for each layout measured at this many cores."""
    rows = [
        ("in-process", ["--workers", "0"], {}),
        ("1 worker x all cores", ["--workers", "1", "--threads-per-worker", str(cores)], {}),
        ("default (the rule in facebatch.pipeline.cluster)", [], {}),
    ]
    if cores > 1:
        rows.append((f"{cores} workers x 1 thread", ["--workers", str(cores), "--threads-per-worker", "1"], {}))
    return rows


def busy_loop(core: int) -> subprocess.Popen:
    """Another user's job: one CPU-bound process pinned to `core`."""
    return subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-c", "while True: pass"])


def time_project(images: Path, cores: int, args: list[str], env: dict, steps: int, out: Path) -> float:
    cpu_list = ",".join(str(c) for c in range(cores))
    command = [
        "taskset", "-c", cpu_list, sys.executable, "-m", "facebatch", "project", str(images), "-g", "celeba64",
        "-o", str(out), "--preset", "fast", "--steps", str(steps), "--overwrite", "--quiet", *args,
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--cores", default="1,2")
    ap.add_argument("--load", default="idle,loaded", help="idle, loaded (a busy process on core 0), or both")
    ap.add_argument("--out", default="bench/out/workers")
    a = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.clear()
    os.environ.update(env)  # the layouts are measured as a user without thread variables meets them
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "in"
        images.mkdir()
        for p in sorted(FACES.iterdir())[: a.faces]:
            (images / p.name).symlink_to(p)
        for load in a.load.split(","):
            for cores in (int(c) for c in a.cores.split(",")):
                for name, args, extra in layouts(cores):
                    hog = busy_loop(0) if load == "loaded" else None
                    try:
                        seconds = time_project(images, cores, args, extra, a.steps, Path(tmp) / "out")
                    finally:
                        if hog is not None:
                            hog.kill()
                            hog.wait()
                    row = {"load": load, "cores": cores, "layout": name, "seconds": seconds,
                           "seconds_per_image": seconds / a.faces}  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    report = {"command": shlex.join([sys.executable, *sys.argv]), "faces": a.faces, "steps": a.steps, "rows": rows}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        f"# Shard layouts: `facebatch project`, {a.faces} faces, fast preset at {a.steps} steps, end to end",
        "",
        f"`{report['command']}`",
        "",
        "| machine | cores | layout | seconds | s / image | vs in-process |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        same = (r["load"], r["cores"], "in-process")
        base = next(x for x in rows if (x["load"], x["cores"], x["layout"]) == same)
        lines.append(
            f"| {r['load']} | {r['cores']} | {r['layout']} | {r['seconds']:.1f} | {r['seconds_per_image']:.2f} "
            f"| {r['seconds'] / base['seconds']:.2f}x |"
        )
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    print(Path(f"{out}.md").read_text())


if __name__ == "__main__":
    main()
