"""Do two checkouts of facebatch write the same outputs? A refactor must not change a byte of what users get.

    python bench/same_outputs.py BEFORE_CHECKOUT [AFTER_CHECKOUT=.] [--work DIR]

Runs one small job per batch command (sample, project, align, label, augment, mix morph) with each checkout's
code (`python -m facebatch` with that checkout first on PYTHONPATH, one torch thread, in this process), then
compares every file: Parquet parts by their data and schema (the run metadata embedded in a part is compared
without its timestamps and versions), everything else byte for byte. Run records (_run.json, markers) hold
times and pids and are left out. Exit 0 when all match; each difference is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SKIP = {"_run.json", "_SUCCESS", ".lock", ".facebatch-written.json"}
VOLATILE = {"created_at", "started_at", "finished_at", "versions", "facebatch", "facebatch_version"}
TIMING_COLUMNS = {"seconds"}  # wall-clock time of a row: differs between any two runs


MIX_APPS = (  # each app once more (morph is above), with settings that run in seconds
    ("crossover", ["--set", "perceptual=none"]),
    ("crossover", ["--layers", "0-3", "--latents", "{work}/project"]),
    ("inpaint", ["--set", "perceptual=none", "--mask", "mouth"]),
    ("style", []),
    ("expression", ["--alpha-sweep", "--latents", "{work}/project"]),
)


def jobs(data: Path, gen: str) -> list[tuple[str, list[str]]]:
    faces = str(data / "faces")
    return [
        ("sample", ["sample", "-g", gen, "-o", "{out}", "--seeds", "0-5", "-w", "0", "-q"]),
        ("project", ["project", faces, "-g", gen, "-o", "{out}", "--steps", "3", "--set", "perceptual=none",
                     "--save-reconstructions", "-w", "0", "-q"]),
        ("label", ["label", "{work}/sample", "-o", "{out}/labels.csv", "--out-dir", "{out}/run", "-w", "0", "-q"]),
        ("augment", ["augment", "--latents", "{work}/sample", "--attr", "Smiling", "--strengths", "-1,1",
                     "-o", "{out}", "-w", "0", "-q"]),
        ("mix", ["mix", "morph", str(data / "pairs.csv"), "-o", "{out}", "-g", gen, "--frames", "3", "--steps", "2",
                 "--set", "perceptual=none", "--animation", "none", "-w", "0", "-q"]),
        *[(f"mix-{app}" + ("-layers" if "--layers" in extra else ""),
           ["mix", app, str(data / "pairs.csv"), "-o", "{out}", "-g", gen, "--steps", "2", *extra, "-w", "0", "-q"])
          for app, extra in MIX_APPS],
    ]  # fmt: skip


def run_all(checkout: Path, work: Path, data: Path, gen: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for name, args in jobs(data, gen):
        out = work / name
        cmd = [sys.executable, "-m", "facebatch", *(a.format(out=out, work=work) for a in args)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
        print(f"{checkout.name or checkout}: {name} rc={res.returncode}", flush=True)
        if res.returncode != 0:
            print(res.stdout[-2000:], res.stderr[-2000:])


def _meta(schema, side: Path) -> dict:
    """The schema metadata with this side's folder written as OUT (a config records its input's path) and
    without the run's times, versions and config hash (which hashes those paths)."""
    meta = {k.decode(): v.decode().replace(str(side), "OUT") for k, v in (schema.metadata or {}).items()}
    if "facebatch" in meta:
        run = json.loads(meta["facebatch"])
        meta["facebatch"] = {k: v for k, v in run.items() if k not in VOLATILE | {"config_hash"}}
    return meta


def _lists(table) -> list[str]:
    return [f.name for f in table.schema if pa.types.is_fixed_size_list(f.type) or pa.types.is_list(f.type)]


def _frame(table, side: Path):
    """Scalar columns (NaN equals NaN, this side's folder written as OUT); list columns are compared as Arrow."""
    frame = table.drop_columns([c for c in table.column_names if c in TIMING_COLUMNS or c in _lists(table)])
    frame = frame.to_pandas()
    for col in frame.columns:
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
            frame[col] = frame[col].map(lambda v: v.replace(str(side), "OUT") if isinstance(v, str) else v)
    return frame


def compare(a: Path, b: Path) -> list[str]:
    diffs = []
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name not in SKIP and "_stats" not in p.parts}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name not in SKIP and "_stats" not in p.parts}
    for rel in sorted(files_a ^ files_b):
        diffs.append(f"only in {'before' if rel in files_a else 'after'}: {rel}")
    for rel in sorted(files_a & files_b):
        pa_, pb = a / rel, b / rel
        if rel.suffix == ".parquet":
            ta, tb = pq.read_table(pa_), pq.read_table(pb)
            same = ta.schema.remove_metadata().equals(tb.schema.remove_metadata())
            same = same and _frame(ta, a).equals(_frame(tb, b)) and _meta(ta.schema, a) == _meta(tb.schema, b)
            same = same and all(ta.column(c).equals(tb.column(c)) for c in _lists(ta))
        else:
            same = pa_.read_bytes() == pb.read_bytes()
        if not same:
            diffs.append(f"differs: {rel}")
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path, nargs="?", default=Path("."))
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--generator", default="celeba64")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="same-outputs-"))
    data = work / "data"
    (data / "faces").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(args.after.resolve()), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "facebatch", "sample", "-g", args.generator, "-o", str(data / "src"),
                    "--seeds", "100-103", "-w", "0", "-q"], env=env, check=True)  # fmt: skip
    for png in sorted((data / "src" / "images").glob("*.png")):
        (data / "faces" / png.name).write_bytes(png.read_bytes())
    names = sorted(p.name for p in (data / "faces").iterdir())
    (data / "pairs.csv").write_text("a,b\n" + f"faces/{names[0]},faces/{names[1]}\n")
    for side, checkout in (("before", args.before), ("after", args.after)):
        (work / side).mkdir(exist_ok=True)
        run_all(checkout.resolve(), work / side, data, args.generator)
    diffs = compare(work / "before", work / "after")
    for line in diffs:
        print(line)
    n = sum(1 for p in (work / "after").rglob("*") if p.is_file())
    print(f"{n} files after; {len(diffs)} difference(s); work folder {work}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
