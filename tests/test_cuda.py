"""The CUDA paths against the CPU: every command that computes on a device gives the CPU's answer there.

Run with `pytest -m cuda` on a machine with a GPU (bench/gpu_day.sh does, first thing on a lent
one); they skip without one. `FACEBATCH_TEST_DEVICE=cpu` runs them with the CPU standing in for the
accelerator, which is how the GPU script's dry run keeps them from rotting on machines with none.

Everything they need is in the repository (the built-in celeba64, celeba-attrs and celeba-clip; the
generator's own samples as images), since a lent GPU machine gets the repository and nothing beside
it. The stlpips weight file does not travel either: projections compare CPU and GPU with the same
seeded stand-in network of the same architecture (`stand_in_stlpips_vgg`).

Tolerances, and why: PyTorch runs CUDA convolutions on the TF32 matrix units by default (10-bit
mantissa), so one render differs from the CPU's by ~1e-3 relative; 8-bit images then differ by at
most a few levels. An optimisation amplifies such differences step by step, so projections and
training are compared by their outcome (PSNR within 0.5 dB; NADA's shift much larger than the
devices' disagreement), not element by element.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.pipeline.latents import read_latent_table
from facebatch.pipeline.rundir import IMAGES, RunDir

pytestmark = pytest.mark.cuda

REPO = Path(__file__).resolve().parents[1]
DEVICE = os.environ.get("FACEBATCH_TEST_DEVICE", "cuda")
# Projection steps: enough for the devices' rounding to compound; on the CPU stand-in a smoke run.
STEPS = 2 if DEVICE == "cpu" else 20
runner = CliRunner()

if DEVICE.startswith("cuda") and not torch.cuda.is_available():
    pytest.skip("no CUDA device (FACEBATCH_TEST_DEVICE=cpu runs these on the CPU)", allow_module_level=True)


def invoke(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


def pngs(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): np.asarray(Image.open(p)).astype(int) for p in sorted(folder.rglob("*.png"))}


def images_of(run: Path) -> Path:
    return RunDir(run).folder(IMAGES)


def assert_close_images(a: dict, b: dict, max_levels: int = 8, mean_levels: float = 0.5) -> None:
    assert a.keys() == b.keys() and a
    diff = np.stack([np.abs(a[k] - b[k]) for k in a])
    assert diff.max() <= max_levels and diff.mean() <= mean_levels, (diff.max(), diff.mean())


@pytest.fixture(autouse=True)
def stand_in_perceptual(monkeypatch):
    """The same seeded stlpips-vgg stand-in on both devices (the weight file does not reach a GPU machine)."""
    import facebatch.nets.perceptual as perceptual

    monkeypatch.setattr(perceptual, "_build_stlpips_vgg", perceptual.stand_in_stlpips_vgg)
    perceptual._cached.cache_clear()
    yield
    perceptual._cached.cache_clear()


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """celeba64 samples rendered on the CPU: the reference run and a folder of its images."""
    tmp = tmp_path_factory.mktemp("cuda-samples")
    invoke("sample", "-g", "celeba64", "-n", "4", "--seed", "11", "-o", tmp / "cpu", "--device", "cpu", "-q")
    return tmp / "cpu"


def project(images: Path, out: Path, device: str, *extra) -> pd.DataFrame:
    """The run's rows by image_id, with the W+ codes as a column of [num_ws, w_dim] arrays."""
    invoke("project", images, "-g", "celeba64", "-o", out, "--preset", "fast", "--steps", STEPS, "--device", device,
           "--batch-size", 4, "-q", *extra)  # fmt: skip
    table = read_latent_table(RunDir(out).table_dir)
    frame = table.frame.drop(columns=["w"], errors="ignore").assign(w=list(table.latent("w")))
    return frame.set_index("image_id").sort_index()


@pytest.fixture(scope="module")
def cpu_projection(samples, tmp_path_factory):
    import facebatch.nets.perceptual as perceptual

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(perceptual, "_build_stlpips_vgg", perceptual.stand_in_stlpips_vgg)
        perceptual._cached.cache_clear()
        frame = project(images_of(samples), tmp_path_factory.mktemp("p") / "cpu", "cpu", "--workers", 0,
                        "--set", "autocast=none")  # fmt: skip
        perceptual._cached.cache_clear()
    return frame


def test_sample_renders_the_cpu_images(samples, tmp_path):
    invoke("sample", "-g", "celeba64", "-n", "4", "--seed", "11", "-o", tmp_path / "dev", "--device", DEVICE, "-q")
    cpu, dev = read_latent_table(RunDir(samples).table_dir), read_latent_table(RunDir(tmp_path / "dev").table_dir)
    np.testing.assert_allclose(dev.latent("w"), cpu.latent("w"), atol=1e-4)
    assert_close_images(pngs(images_of(tmp_path / "dev")), pngs(images_of(samples)))


def test_project_fp32_reaches_the_cpu_result(samples, cpu_projection, tmp_path):
    dev = project(images_of(samples), tmp_path / "dev", DEVICE, "--workers", 0, "--set", "autocast=none")
    assert (dev.status == "ok").all() and list(dev.index) == list(cpu_projection.index)
    np.testing.assert_allclose(dev.psnr, cpu_projection.psnr, atol=0.5)
    assert abs(dev.psnr.mean() - cpu_projection.psnr.mean()) <= 0.25


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_project_under_autocast_stays_within_a_db_of_fp32(samples, cpu_projection, tmp_path, precision):
    dev = project(images_of(samples), tmp_path / precision, DEVICE, "--workers", 0, "--set", f"autocast={precision}")
    assert (dev.status == "ok").all() and np.isfinite(np.stack(dev.w.to_numpy())).all()
    np.testing.assert_allclose(dev.psnr, cpu_projection.psnr, atol=1.0)


def test_local_dask_cluster_with_one_gpu_worker(samples, tmp_path):
    # Worker processes cannot see this process's stand-in perceptual net: MSE alone on both sides.
    ref = project(images_of(samples), tmp_path / "inproc", DEVICE, "--workers", 0, "--set", "perceptual=none")
    dask = project(images_of(samples), tmp_path / "dask", DEVICE, "--workers", 1, "--shard-size", 2,
                   "--set", "perceptual=none")  # fmt: skip
    np.testing.assert_allclose(dask.psnr, ref.psnr, atol=0.3)
    markers = [json.loads(p.read_text()) for p in sorted(RunDir(tmp_path / "dask").stats_dir.glob("*.json"))]
    assert len(markers) == 2
    assert {m["device"] for m in markers} == {"cuda" if DEVICE.startswith("cuda") else DEVICE}
    assert os.getpid() not in {m["pid"] for m in markers}  # computed in the worker process


def test_label_with_the_predictor_matches_the_cpu(samples, tmp_path):
    for name, device in (("cpu", "cpu"), ("dev", DEVICE)):
        invoke("label", images_of(samples), "-o", tmp_path / f"{name}.csv", "--predictor", "celeba-attrs",
               "--device", device, "-q")  # fmt: skip
    cpu, dev = pd.read_csv(tmp_path / "cpu.csv"), pd.read_csv(tmp_path / "dev.csv")
    assert list(cpu.columns) == list(dev.columns) and list(cpu.image_id) == list(dev.image_id)
    np.testing.assert_allclose(dev.drop(columns="image_id"), cpu.drop(columns="image_id"), atol=2e-3)


def test_label_with_clip_matches_the_cpu(samples, tmp_path):
    prompt = "Smiling=a smiling face|a face"
    for name, device in (("cpu", "cpu"), ("dev", DEVICE)):
        invoke("label", images_of(samples), "-o", tmp_path / f"{name}.csv", "--clip", "celeba-clip",
               "--prompt", prompt, "--device", device, "-q")  # fmt: skip
    cpu, dev = pd.read_csv(tmp_path / "cpu.csv"), pd.read_csv(tmp_path / "dev.csv")
    np.testing.assert_allclose(dev.Smiling, cpu.Smiling, atol=2e-3)


def test_nada_shifts_the_generator_as_on_the_cpu(tmp_path):
    from facebatch.nets.checkpoints import load_networks

    for name, device in (("cpu", "cpu"), ("dev", DEVICE)):
        invoke("nada", "-g", "celeba64", "--clip", "celeba-clip", "--source", "a face", "--target", "a smiling face",
               "--iters", 4, "--batch", 2, "--layers", "all", "--grid-seeds", "0-1", "-o",
               tmp_path / f"{name}.safetensors", "--device", device, "-q")  # fmt: skip
    z = torch.randn(4, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = load_networks("celeba64", with_d=False).G(z)
        cpu = load_networks(tmp_path / "cpu.safetensors", with_d=False).G(z)
        dev = load_networks(tmp_path / "dev.safetensors", with_d=False).G(z)
    shift = (cpu - base).abs().mean().item()
    disagreement = (dev - cpu).abs().mean().item()
    assert shift > 1e-3 and disagreement <= 0.25 * shift, (shift, disagreement)


def test_augment_renders_the_cpu_edits(samples, tmp_path):
    for name, device in (("cpu", "cpu"), ("dev", DEVICE)):
        invoke("augment", "--latents", samples, "--attr", "smile,age", "--strengths", "-2,0,2", "-o",
               tmp_path / name, "--device", device, "--workers", 0, "-q")  # fmt: skip
    cpu, dev = pngs(images_of(tmp_path / "cpu")), pngs(images_of(tmp_path / "dev"))
    assert len(cpu) == 4 * 2 * 3
    assert_close_images(dev, cpu)


# -- the celeba64 training recipe ------------------------------------------------------------------


def _train_module():
    spec = importlib.util.spec_from_file_location("celeba64_train", REPO / "models" / "celeba64" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trainer(train, device: str, precision: str = "tf32"):
    args = train.parse_args(["--data", "unused", "--out", "unused", "--precision", precision, "--batch", "8"])
    trainer = train.Trainer(args, torch.device(device))
    trainer.init_from_model(REPO / "models" / "celeba64" / "celeba64.safetensors")
    return trainer


def test_training_recipe_d_loss_and_r1_match_the_cpu():
    train = _train_module()
    reals = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    results = {}
    for device in ("cpu", DEVICE):
        trainer = _trainer(train, device, "fp32" if device == "cpu" else "tf32")
        x = reals.to(device).requires_grad_(True)
        logits = trainer.D(x)
        (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
        r1 = grad.square().sum([1, 2, 3]).mean()
        r1.backward()  # the double-backward path the lazy R1 step takes
        d_grad = torch.cat([p.grad.flatten() for p in trainer.D.parameters() if p.grad is not None])
        results[device] = logits.detach().cpu(), r1.item(), d_grad.cpu()
    (l_cpu, r_cpu, g_cpu), (l_dev, r_dev, g_dev) = results["cpu"], results[DEVICE]
    torch.testing.assert_close(l_dev, l_cpu, rtol=1e-2, atol=1e-2)
    assert r_dev == pytest.approx(r_cpu, rel=1e-2)
    assert torch.linalg.vector_norm(g_dev - g_cpu) <= 2e-2 * torch.linalg.vector_norm(g_cpu)


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_training_steps_run_on_the_device(precision):
    train = _train_module()
    trainer = _trainer(train, DEVICE, precision)
    data = torch.randint(0, 256, (32, 3, 64, 64), dtype=torch.uint8, device=DEVICE)
    before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    ema_before = trainer.G_ema.synthesis.b64.torgb.weight.clone()
    nimg = trainer.nimg
    trainer.step = 0  # the first step takes the R1 path
    for _ in range(2):
        loss_g, loss_d = trainer.train_step(train.sample_reals(data, trainer.batch))
        assert torch.isfinite(loss_g) and torch.isfinite(loss_d)
    assert trainer.nimg == nimg + 2 * trainer.batch
    assert any(not torch.equal(before[k], v) for k, v in trainer.G.state_dict().items())
    assert not torch.equal(ema_before, trainer.G_ema.synthesis.b64.torgb.weight)


# -- the encoder ----------------------------------------------------------------------------------------------


def test_encoder_training_and_encoding_follow_the_device(tmp_path):
    """A few encoder steps on the device from the same seed as on the CPU: same draws (the run's CPU generator),
    so the losses agree to TF32 rounding; the written encoder encodes the same on both devices."""
    from facebatch.encoder.api import encode, load_encoder, train_encoder_file
    from facebatch.nets.checkpoints import load_networks

    nets = load_networks("celeba64", with_d=False)
    settings = dict(iters=3, batch=8, image_batch=2, real_batch=0, perceptual="none", widths=(8, 16, 16, 16))
    runs = {}
    for name, device in (("cpu", "cpu"), ("dev", DEVICE)):
        runs[name] = train_encoder_file(nets, out=tmp_path / f"{name}.safetensors", device=device, **settings)
    for a, b in zip(runs["cpu"].losses, runs["dev"].losses):
        assert b["latent"] == pytest.approx(a["latent"], rel=2e-2)
    enc = load_encoder(tmp_path / "cpu.safetensors", generator=nets)
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    on_cpu = encode(x, enc)
    enc.encoder.to(DEVICE)
    np.testing.assert_allclose(encode(x, enc), on_cpu, rtol=1e-2, atol=1e-2)
