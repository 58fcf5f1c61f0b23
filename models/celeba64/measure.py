"""Measure a celeba64 generator on the figures its card, the quality goals and the tests' floors rest on.

    OMP_NUM_THREADS=1 python models/celeba64/measure.py -g CANDIDATE.safetensors \
        --boundaries BOUNDARIES.json --out metrics.json

Every figure runs through facebatch's own functions, on people no model here trained on (CelebA `val`):

- inversion: the first `--faces` `val` faces, `default` preset cut to `--steps` (200) steps: mean PSNR /
  SSIM / ST-LPIPS of target vs reconstruction; also `fast` at 30 steps against the mean face (the
  pixel mean of 64 `train` faces), the comparison tests/test_invert_quality.py makes;
- samples: the share of `--samples` samples (seeds 0.., psi 1) that celeba-attrs calls confidently Male
  or Female (p < 0.1 or > 0.9): how definite its faces are to a predictor trained on photos;
- boundaries: on the inversion's reconstructions, the share whose predicted call of age / gender /
  smile flips when edited at strength 3 toward the other call, with the shipped boundaries given;
- held_out: the shipped smile / age boundaries on samples no fit saw (tests/test_label_cmd.py's checks);
- nada: StyleGAN-NADA with celeba-clip, "a person" -> "a smiling person" / "a person with
  eyeglasses", 80 iterations: the rise of P(Smiling) / P(Eyeglasses) over 128 samples at psi 0.7, and
  the other attributes' mean change (tests/test_nada_effect.py's measurement).

The JSON is what models/celeba64/refresh.py writes into models/celeba64/metrics.json; the tests read
their floors from that file (floor = measured x their own margin), so a new model brings its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / ".." / "shared" / "data" / "celeba10k"
# shipped boundary -> (CelebA attribute, orientation): age is 1 - p(Young), so + means older
EDITS = {"age": ("Young", -1), "gender": ("Male", +1), "smile": ("Smiling", +1)}
NADA = {"Smiling": "a smiling person", "Eyeglasses": "a person with eyeglasses"}
NADA_ITERS, NADA_SAMPLES = 80, 128


def split_files(split: str, n: int) -> list[Path]:
    table = pd.read_csv(DATA / "split.csv")
    return [DATA / "images" / i for i in table[table.split == split].image_id[:n]]


@torch.no_grad()
def render(G, ws: np.ndarray, batch: int = 32) -> torch.Tensor:
    ws_t = torch.from_numpy(np.asarray(ws, np.float32))
    return torch.cat([G.synthesis(ws_t[i : i + batch], noise_mode="const") for i in range(0, len(ws_t), batch)])


def inversion(nets, faces: int, steps: int) -> tuple[dict, np.ndarray]:
    import facebatch as fb
    from facebatch.invert.scores import score_pairs
    from facebatch.pipeline.images import load_image

    files = split_files("val", faces)
    t0 = time.perf_counter()
    table = fb.project(files, nets, preset="default", overrides={"steps": steps}, batch_size=8, device="cpu")
    seconds = time.perf_counter() - t0
    frame = table.frame
    assert (frame.status == "ok").all(), frame[frame.status != "ok"]
    R = nets.G.img_resolution
    mean_face = torch.stack([load_image(p, R)[0] for p in split_files("train", 64)]).mean(0, keepdim=True)
    targets = torch.stack([load_image(p, R)[0] for p in files[:4]])
    fast = fb.project(files[:4], nets, preset="fast", overrides={"steps": 30}, batch_size=4, device="cpu")
    baseline = score_pairs(targets, mean_face.expand_as(targets), perceptual=None)["psnr"]
    gain = fast.frame.psnr.to_numpy() - baseline
    result = {
        "faces": faces,
        "preset": "default",
        "steps": steps,
        "psnr": float(frame.psnr.mean()),
        "psnr_std": float(frame.psnr.std()),
        "ssim": float(frame.ssim.mean()),
        "st_lpips": float(frame.perceptual.mean()),
        "seconds_per_face": seconds / faces,
        "fast30_gain_over_mean_face_min": float(gain.min()),
        "fast30_gain_over_mean_face_mean": float(gain.mean()),
    }
    return result, table.latent("w")


def confident_calls(nets, predictor, samples: int) -> dict:
    from facebatch.nets.sampling import z_from_seeds

    with torch.no_grad():
        ws = nets.G.mapping(z_from_seeds(range(samples), nets.G.z_dim), None).numpy()
    p = predictor.probs(render(nets.G, ws).clamp(-1, 1)).numpy()[:, list(predictor.names).index("Male")]
    return {"samples": samples, "confident_male_or_female": float(((p < 0.1) | (p > 0.9)).mean())}


def boundary_flips(nets, predictor, boundaries_path: Path, ws: np.ndarray, strength: float = 3.0) -> dict:
    """Per shipped edit, the share of images whose call flips when moved `strength` toward the other call, and
    (`<edit>_others`) how far the other two edited attributes' probabilities moved on the way."""
    from facebatch.edit.apply import edit_latents
    from facebatch.edit.boundaries_io import load_boundaries

    boundaries = load_boundaries(boundaries_path)
    names = list(predictor.names)
    base = predictor.probs(render(nets.G, ws).clamp(-1, 1)).numpy()
    result = {"strength": strength, "images": len(ws)}
    for name, (attr, sign) in EDITS.items():
        q = base[:, names.index(attr)] if sign > 0 else 1 - base[:, names.index(attr)]
        call = q >= 0.5
        toward = np.where(call, -strength, strength).astype(np.float32)  # each image toward its other call
        edited = edit_latents(ws, boundaries[name], toward)
        after = predictor.probs(render(nets.G, edited).clamp(-1, 1)).numpy()
        p = after[:, names.index(attr)]
        q_after = p if sign > 0 else 1 - p
        result[name] = float(((q_after >= 0.5) != call).mean())
        # What else moved: the mean |change| of the other edited attributes' probabilities (0: a clean edit).
        others = [names.index(a) for n, (a, _) in EDITS.items() if n != name]
        result[f"{name}_others"] = float(np.abs(after[:, others] - base[:, others]).mean())
    return result


def held_out_edits(nets, predictor, boundaries_path: Path) -> dict:
    """The shipped boundaries on samples no fit saw (tests/test_label_cmd.py's checks): the mean rise of
    P(Smiling) at +3 along `smile` over seeds 1,000,000.. (64) and the share that rose; the drop of the mean
    P(Young) from -3 to +3 along `age` over seeds 2,000,000.. (32)."""
    from facebatch.edit.apply import edit_latents
    from facebatch.edit.boundaries_io import load_boundaries
    from facebatch.nets.sampling import z_from_seeds

    boundaries, names, G = load_boundaries(boundaries_path), list(predictor.names), nets.G
    with torch.no_grad():
        ws = G.mapping(z_from_seeds(range(1_000_000, 1_000_064), G.z_dim), None).numpy()
    j = names.index("Smiling")
    before = predictor.probs(render(G, ws))[:, j]
    after = predictor.probs(render(G, edit_latents(ws, boundaries["smile"], np.full(len(ws), 3.0))))[:, j]
    with torch.no_grad():
        ws = G.mapping(z_from_seeds(range(2_000_000, 2_000_032), G.z_dim), None).numpy()
    k = names.index("Young")
    young = [float(predictor.probs(render(G, edit_latents(ws, boundaries["age"], np.full(len(ws), s))))[:, k].mean())
             for s in (-3.0, 3.0)]  # fmt: skip
    return {
        "smile_plus3_rise": float((after - before).mean()),
        "smile_plus3_share_up": float((after > before).float().mean()),
        "age_young_drop_minus3_to_plus3": young[0] - young[1],
    }


def nada_effect(nets, predictor) -> dict:
    from facebatch.domain_shift.api import run_nada
    from facebatch.nets.sampling import z_from_seeds

    def probs(G):
        with torch.no_grad():
            ws = G.mapping(z_from_seeds(range(NADA_SAMPLES), G.z_dim), None, truncation_psi=0.7).numpy()
        return predictor.probs(render(G, ws).clamp(-1, 1)).numpy()

    before = probs(nets.G)
    result = {"iters": NADA_ITERS, "samples": NADA_SAMPLES}
    with tempfile.TemporaryDirectory() as tmp:
        for attr, target in NADA.items():
            shifted = run_nada(nets, source="a person", target=target, out=Path(tmp) / f"{attr}.safetensors",
                               clips=["celeba-clip"], iters=NADA_ITERS)  # fmt: skip
            change = probs(shifted.G).mean(0) - before.mean(0)
            i = list(predictor.names).index(attr)
            result[attr] = {"change": float(change[i]), "others_mean_abs": float(np.abs(np.delete(change, i)).mean())}
    return result


SECTIONS = ("inversion", "samples", "boundaries", "held_out", "nada")


def measure(generator: str, boundaries: Path | None, faces: int, steps: int, samples: int, sections, out: dict) -> dict:
    """The sections asked for, added to `out` (what an earlier run of this script measured)."""
    import facebatch as fb
    from facebatch.nets import predictors
    from facebatch.nets.cache import sha256_of
    from facebatch.nets.native_format import read_native

    nets = fb.load_generator(generator, with_d=False)
    predictor = predictors.load(predictors.resolve_predictor("celeba-attrs"))
    path = Path(generator) if Path(generator).is_file() else None
    out.update({"generator": str(generator), "torch_threads": torch.get_num_threads()})
    if path is not None:
        out["sha256"] = sha256_of(path)
        out["kimg"] = read_native(path).extra.get("kimg")
    ws = None
    if "inversion" in sections or ("boundaries" in sections and boundaries is not None):
        out["inversion"], ws = inversion(nets, faces, steps)
        print(json.dumps(out["inversion"]), flush=True)
    if "samples" in sections:
        out["samples"] = confident_calls(nets, predictor, samples)
        print(json.dumps(out["samples"]), flush=True)
    if boundaries is not None and "boundaries" in sections:
        out["boundaries"] = boundary_flips(nets, predictor, boundaries, ws)
        print(json.dumps(out["boundaries"]), flush=True)
    if boundaries is not None and "held_out" in sections:
        out["held_out"] = held_out_edits(nets, predictor, boundaries)
        print(json.dumps(out["held_out"]), flush=True)
    if "nada" in sections:
        out["nada"] = nada_effect(nets, predictor)
        print(json.dumps(out["nada"]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-g", "--generator", default="celeba64")
    ap.add_argument("--boundaries", type=Path, help="boundaries.json fitted for this generator (flip rates)")
    ap.add_argument("--faces", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    ap.add_argument("--out", type=Path, required=True, help="JSON; sections not measured now are kept from it")
    a = ap.parse_args()
    sections = [x for x in a.sections.split(",") if x]
    if unknown := set(sections) - set(SECTIONS):
        sys.exit(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if not (DATA / "split.csv").is_file():
        sys.exit(f"{DATA} is absent: the measurements need the CelebA val split beside the repository")
    earlier = json.loads(a.out.read_text()) if a.out.is_file() else {}
    result = measure(a.generator, a.boundaries, a.faces, a.steps, a.samples, sections, earlier)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
