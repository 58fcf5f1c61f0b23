"""Swap a new celeba64 generator in everywhere, with every figure that rests on it measured again.

    OMP_NUM_THREADS=1 python models/celeba64/refresh.py CANDIDATE.safetensors [--work runs/refresh]
    make refresh-model CANDIDATE=CANDIDATE.safetensors

Steps (each writes into --work and is skipped when its output is already there, so an interrupted
refresh resumes):
  1. check: the candidate is a facebatch generator file with a discriminator and the built-in's
     architecture (another architecture is another model, not a refresh);
  2. boundaries: make_boundaries.py on the candidate (20,000 samples labelled by celeba-attrs);
  3. measure: measure.py on the built-in model as it is (unless models/celeba64/metrics.json already
     describes it) and on the candidate: inversion of `val` faces, confident predictor calls on
     samples, boundary flip rates, the NADA effect;
  4. swap: the candidate becomes models/celeba64/celeba64.safetensors, its boundaries
     boundaries.json, its sha256 and images seen go into the registry (facebatch/nets/models.json),
     and metrics.json holds the candidate's figures beside the previous model's; the tests read their
     floors from metrics.json (floor = measured x the test's margin), so they move with the model;
  5. figures: the card's sample grid (samples.png), a `make demo`-style run of 16 `val` faces and
     the README's pictures from it (bench/readme_figures.py), and the card's measured table.

It prints each figure before and after. What it does not redo: the NADA before/after pictures in
docs/ (bench/nada_effect.py --keep DIR makes them; 300 iterations each) and bench/quality.py's full
tables; run those when a figure in the README text should move with them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REGISTRY = REPO / "facebatch" / "nets" / "models.json"
METRICS = HERE / "metrics.json"
BUILTIN = HERE / "celeba64.safetensors"
CARD = HERE / "README.md"
BEGIN, END = "<!-- measured:begin (models/celeba64/refresh.py writes this block) -->", "<!-- measured:end -->"


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], check=True, cwd=REPO)


def check(candidate: Path) -> dict:
    from facebatch.nets.native_format import read_native

    new, old = read_native(candidate), read_native(BUILTIN)
    if new.d_state is None:
        raise SystemExit(f"{candidate} holds no discriminator: training could not go on from it")
    if new.g_kwargs != old.g_kwargs:
        raise SystemExit(f"{candidate} is another architecture than the built-in celeba64 ({new.g_kwargs})")
    return new.extra


def measured(path: Path, boundaries: Path, out: Path) -> dict:
    if not out.is_file():
        run(str(HERE / "measure.py"), "-g", str(path), "--boundaries", str(boundaries), "--out", str(out))
    return json.loads(out.read_text())


def card_block(current: dict, previous: dict | None) -> str:
    """The card's table of measured figures, previous model beside the current one."""
    rows = [
        ("images seen (kimg)", lambda m: m.get("kimg"), "{}"),
        ("`val` inversion PSNR, default preset 200 steps (dB)", lambda m: m["inversion"]["psnr"], "{:.2f}"),
        ("`val` inversion ST-LPIPS", lambda m: m["inversion"]["st_lpips"], "{:.4f}"),
        ("`val` inversion SSIM", lambda m: m["inversion"]["ssim"], "{:.3f}"),
        (
            "samples called Male / Female with p < 0.1 or > 0.9",
            lambda m: m["samples"]["confident_male_or_female"],
            "{:.3f}",
        ),  # fmt: skip
        *[
            (f"`{n}` boundary flips the call at strength 3", lambda m, n=n: m["boundaries"][n], "{:.2f}")
            for n in ("age", "gender", "smile")
        ],
        ("NADA 'smiling': rise of P(Smiling)", lambda m: m["nada"]["Smiling"]["change"], "{:+.3f}"),
        ("NADA 'eyeglasses': rise of P(Eyeglasses)", lambda m: m["nada"]["Eyeglasses"]["change"], "{:+.3f}"),
    ]

    def cell(m, get, fmt):
        try:
            value = get(m)
        except (KeyError, TypeError):
            return "-"
        return "-" if value is None else fmt.format(value)

    head = [
        "| figure | " + ("previous | " if previous else "") + "this model |",
        "|---|" + "---:|" * (2 if previous else 1),
    ]
    body = [
        f"| {name} | " + (f"{cell(previous, get, fmt)} | " if previous else "") + f"{cell(current, get, fmt)} |"
        for name, get, fmt in rows
    ]
    inv = current["inversion"]
    note = (
        f"\nMeasured by `models/celeba64/measure.py` on the first {inv['faces']} CelebA `val` faces (people no "
        f"model here trained on), {current.get('torch_threads', 1)} torch thread(s) on a CPU; the sample and "
        "boundary figures use the shipped celeba-attrs predictor. `metrics.json` holds every number; the tests' "
        "floors are fractions of these."
    )
    return "\n".join([BEGIN, *head, *body, note, END])


def write_card(block: str) -> None:
    text = CARD.read_text()
    if BEGIN in text:
        start, end = text.index(BEGIN), text.index(END) + len(END)
        text = text[:start] + block + text[end:]
    else:
        text = text.replace("## Measured\n", "## Measured\n\n" + block + "\n", 1)
    CARD.write_text(text)


def pin(sha: str, kimg) -> None:
    registry = json.loads(REGISTRY.read_text())
    entry = registry["models"]["celeba64"]
    entry["sha256"] = sha
    entry["description"] = (
        f"built-in demo: a small StyleGAN2 (64 px, 10 W+ layers) trained on the CelebA train split ({kimg} kimg)"
    )
    REGISTRY.write_text(json.dumps(registry, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidate", type=Path, help="a generator file written by train.py (latest.safetensors)")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "refresh")
    ap.add_argument("--demo-faces", type=int, default=16)
    a = ap.parse_args()
    from facebatch.nets.cache import sha256_of

    candidate = a.candidate.resolve()
    extra = check(candidate)
    sha = sha256_of(candidate)
    work = a.work / sha[:12]
    work.mkdir(parents=True, exist_ok=True)
    print(f"candidate {candidate}: {extra.get('kimg')} kimg, sha256 {sha}; work folder {work}")

    boundaries = work / "boundaries.json"
    if not boundaries.is_file():
        run(str(HERE / "make_boundaries.py"), "-g", str(candidate), "--work", str(work / "boundaries"),
            "--out", str(boundaries))  # fmt: skip
    previous_doc = json.loads(METRICS.read_text()) if METRICS.is_file() else {}
    previous = previous_doc.get("current")
    old_sha = sha256_of(BUILTIN)
    if not previous or previous.get("sha256") != old_sha:
        shutil.copy(HERE / "boundaries.json", work / "previous-boundaries.json")
        previous = measured(BUILTIN, work / "previous-boundaries.json", work / "metrics-previous.json")
        previous["sha256"] = old_sha
    current = measured(candidate, boundaries, work / "metrics-candidate.json")

    if sha256_of(BUILTIN) != sha:
        shutil.copy(candidate, BUILTIN)
        shutil.copy(boundaries, HERE / "boundaries.json")
        pin(sha, extra.get("kimg"))
    METRICS.write_text(json.dumps({"current": current, "previous": previous}, indent=1) + "\n")
    write_card(card_block(current, previous))

    run(str(REPO / "bench" / "readme_figures.py"), "--samples-only", "--samples", "32", "--out", str(HERE),
        "--samples-name", "samples.png")  # fmt: skip
    demo = work / "demo"
    if not (demo / "_SUCCESS").exists():
        faces = work / "demo-in"
        faces.mkdir(exist_ok=True)
        import pandas as pd

        root = REPO.parent / "shared" / "data" / "celeba10k"
        split = pd.read_csv(root / "split.csv")
        for name in split[split.split == "val"].image_id[: a.demo_faces]:
            link = faces / name
            if not link.exists():
                link.symlink_to(root / "images" / name)
        run("-m", "facebatch", "project", str(faces), "-g", "celeba64", "-o", str(demo), "--preset", "fast",
            "--save-reconstructions", "--overwrite", "--workers", "0", "-q")  # fmt: skip
    run(str(REPO / "bench" / "readme_figures.py"), "--run", str(demo), "--out", str(REPO / "docs"))

    print("\nfigure: previous -> this model")
    for line in card_block(current, previous).splitlines()[2:-2]:
        print(line)


if __name__ == "__main__":
    main()
