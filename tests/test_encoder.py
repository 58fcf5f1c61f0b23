"""Encoders: training (reproducible, resumable), the file (data, refused for another generator), and the
projector starting from one (`--init encoder`, the `encoder` and `hybrid` presets, encoder_consistency)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.errors import CheckpointError, InputError
from facebatch.nets.native_format import write_native
from facebatch.nets.stylegan2 import Generator

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")

G_KWARGS = dict(
    z_dim=32,
    c_dim=0,
    w_dim=32,
    img_resolution=32,
    img_channels=3,
    mapping_kwargs=dict(num_layers=2),
    synthesis_kwargs=dict(channel_base=512, channel_max=32),
)
TINY = dict(widths=(8, 16, 16), batch=16, image_batch=4, real_batch=0, perceptual="none", snapshot_every=5)


def invoke(*args, code=0):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    """A tiny random generator, as a file. Like a trained one, its noise strengths are non-zero and its images
    depend strongly on w (random affine layers leave every style near its bias of 1: images that barely
    change with w, from which no encoder could read w back)."""
    torch.manual_seed(0)
    G = Generator(**G_KWARGS)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
            if name.endswith("affine.weight"):
                p.mul_(4.0)
        w = G.mapping(torch.randn(2000, 32))
        G.mapping.w_avg.copy_(w[:, 0].mean(0))
    return write_native(tmp_path_factory.mktemp("g") / "G.safetensors", G_KWARGS, G.state_dict())


@pytest.fixture(scope="module")
def nets(generator_file):
    from facebatch import load_generator

    return load_generator(generator_file, with_d=False)


@pytest.fixture(scope="module")
def trained(nets, tmp_path_factory):
    """An encoder trained for 300 steps on the tiny generator's samples (~20 s on one thread)."""
    from facebatch.encoder.api import train_encoder_file

    out = tmp_path_factory.mktemp("enc") / "E.safetensors"
    result = train_encoder_file(nets, out=out, iters=300, lr=3e-3, seed=1, **{**TINY, "snapshot_every": 100})
    return out, result


def samples(nets, seeds) -> tuple[torch.Tensor, torch.Tensor]:
    """(W+ codes with style mixing, their const-noise renders) of a few seeds: targets whose code is known."""
    from facebatch.nets.sampling import z_from_seeds

    G = nets.G
    with torch.no_grad():
        ws = G.mapping(z_from_seeds(seeds, G.z_dim), None, truncation_psi=0.8)
        ws[1::2, 3:] = ws.flip(0)[1::2, 3:]  # mixed codes too: W+, not only W
        return ws, G.synthesis(ws, noise_mode="const").clamp(-1, 1)


def test_encoder_is_sized_from_the_generator():
    from facebatch.nets.encoder import Encoder, default_widths, row_levels

    assert row_levels(18) == ["coarse"] * 3 + ["middle"] * 4 + ["fine"] * 11  # pSp's split for 1024 px
    assert row_levels(10) == ["coarse"] * 3 + ["middle"] * 4 + ["fine"] * 3
    assert len(default_widths(64)) == 4 and len(default_widths(1024)) == 6  # a 1024-px G is read at 256 px
    E = Encoder(1024, 18, 512, widths=[8, 8, 8, 8, 8, 8])
    assert E(torch.zeros(1, 3, 1024, 1024)).shape == (1, 18, 512)


def test_training_lowers_both_losses_and_encodes_better_than_the_mean(nets, trained):
    from facebatch.encoder.api import encode, load_encoder
    from facebatch.invert.scores import score_pairs

    out, result = trained
    first, last = result.losses[:50], result.losses[-50:]
    # Measured: latent 0.86 -> 0.78 and image MSE falling by half over these 300 steps (fresh samples every
    # step: reading w back generalises slowly, pixels quickly).
    assert np.mean([r["latent"] for r in last]) < 0.97 * np.mean([r["latent"] for r in first])
    assert np.mean([r["image_samples"] for r in last]) < 0.8 * np.mean([r["image_samples"] for r in first])
    enc = load_encoder(out, generator=nets)
    assert enc.images_seen == 300 * 16 and enc.generator_sha256 == nets.sha256
    ws, images = samples(nets, range(100, 108))
    codes = encode(images, enc)
    with torch.no_grad():
        recon = nets.G.synthesis(torch.from_numpy(codes), noise_mode="const")
        mean = nets.G.synthesis(nets.G.mapping.w_avg.expand(8, nets.G.num_ws, -1), noise_mode="const")
    psnr_enc = score_pairs(images, recon, perceptual=None)["psnr"]
    psnr_mean = score_pairs(images, mean, perceptual=None)["psnr"]
    assert psnr_enc.mean() > psnr_mean.mean() + 1.0, (psnr_enc, psnr_mean)
    assert (result.grid is not None) and result.grid.is_file()  # target | reconstruction at fixed inputs


def test_init_encoder_reaches_a_psnr_in_fewer_steps_than_w_avg(nets, trained):
    from facebatch.encoder.api import load_encoder
    from facebatch.invert.presets import load_preset
    from facebatch.invert.projector import Projector

    enc = load_encoder(trained[0], generator=nets)
    _, images = samples(nets, range(200, 204))
    curves = {}
    for init in ("w_avg", "encoder"):
        cfg = load_preset("fast", {"init": init, "steps": 40, "perceptual": "none", "w_avg_samples": 2000})
        losses = Projector(nets.G, None, cfg, encoder=enc.encoder).project(images, [0, 1, 2, 3]).losses
        curves[init] = losses.mean(axis=1)  # per step: mean MSE (the only loss term here)
    target = curves["w_avg"][-1]  # what 40 steps from the mean reach
    steps_needed = int(np.argmax(curves["encoder"] <= target)) + 1
    assert curves["encoder"][0] < curves["w_avg"][0]
    assert curves["encoder"].min() <= target and steps_needed < 30, (steps_needed, curves)


def test_resumed_training_is_the_uninterrupted_run_bit_for_bit(nets, tmp_path):
    from facebatch.encoder.api import train_encoder_file

    settings = {**TINY, "iters": 6, "snapshot_every": 3}
    whole = train_encoder_file(nets, out=tmp_path / "a.safetensors", **settings)
    cut = train_encoder_file(nets, out=tmp_path / "b.safetensors", stop_after=3, **settings)
    assert cut.iteration == 3 and not (tmp_path / "b.safetensors").exists()  # written only when done
    resumed = train_encoder_file(nets, out=tmp_path / "b.safetensors", **settings)
    assert resumed.resumed_from == 3 and resumed.images_seen == whole.images_seen
    a, b = whole.encoder.state_dict(), resumed.encoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # another recipe in the same work folder is refused, naming what differs
    with pytest.raises(InputError, match="lr"):
        train_encoder_file(nets, out=tmp_path / "c.safetensors", work=tmp_path / "b.encoder-work",
                           **{**settings, "lr": 0.01})  # fmt: skip


def test_a_damaged_snapshot_is_one_line_naming_it_and_ctrl_c_says_how_to_resume(
    nets, generator_file, tmp_path, monkeypatch
):
    import shutil

    from test_nada import _saved, damaged_snapshots

    from facebatch.encoder.api import train_encoder_file
    from facebatch.encoder.train import EncoderTrainer
    from facebatch.pipeline.snapshots import latest_snapshot

    settings = {**TINY, "iters": 4, "snapshot_every": 2}
    train_encoder_file(nets, out=tmp_path / "E.safetensors", stop_after=2, **settings)
    good = tmp_path / "E.encoder-work"
    snapshot = latest_snapshot(good)
    state = torch.load(snapshot, weights_only=True)
    cases = damaged_snapshots(snapshot, "encoder") + [
        ("losses not JSON", _saved({**state, "losses": "not json"})),
        ("losses too few", _saved({**state, "losses": "[]"})),
        ("images seen negative", _saved({**state, "images_seen": -1})),
    ]
    for n, (what, data) in enumerate(cases):
        work = tmp_path / f"w{n}"
        shutil.copytree(good, work)
        (work / "snapshots" / snapshot.name).write_bytes(data)
        with pytest.raises(InputError) as info:
            train_encoder_file(nets, out=tmp_path / f"E{n}.safetensors", work=work, **settings)
        message = str(info.value)
        assert "\n" not in message and str(work / "snapshots" / snapshot.name) in message, (what, message)
        assert "cannot be resumed" in message and "--overwrite" in message, (what, message)
        assert not (tmp_path / f"E{n}.safetensors").exists(), what
    # Ctrl-C in the command: one line, exit 130, the snapshot it goes on from; then the same command resumes
    step = EncoderTrainer.step

    def interrupted(self):
        if self.iteration == 3:
            raise KeyboardInterrupt
        return step(self)

    args = ["encoder", "train", "-g", generator_file, "-o", tmp_path / "cli.safetensors", "--iters", 4, "--batch", 4,
            "--image-batch", 2, "--real-batch", 0, "--snapshot-every", 2]  # fmt: skip
    monkeypatch.setattr(EncoderTrainer, "step", interrupted)
    res = invoke(*args, code=130)
    monkeypatch.setattr(EncoderTrainer, "step", step)
    assert res.output.count("\n") == 1 and "interrupted at step 3 of 4" in res.output, res.output
    assert "resumes from the last snapshot (step 2" in res.output, res.output
    assert "resumed at step 2" in invoke(*args).output


def test_real_images_not_in_a_folder_are_said_as_what_they_are(tmp_path):
    import os

    from facebatch.encoder.api import load_real_images

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "photo.jpg").write_bytes(b"x")
    for path, said in (
        (tmp_path / "fifo", "is a FIFO"),
        (Path("/dev/null"), "is a character device"),
        (tmp_path / "photo.jpg", "is a file, not a folder"),
        (tmp_path / "missing", "no such folder"),
    ):
        with pytest.raises(InputError) as info:
            load_real_images(path, 32)
        message = str(info.value)
        assert said in message and str(path) in message and "--real" in message and "\n" not in message, message


def test_cli_trains_and_the_file_says_what_it_is(generator_file, tmp_path):
    out = tmp_path / "E.safetensors"
    res = invoke("encoder", "train", "-g", generator_file, "-o", out, "--iters", 2, "--batch", 4, "--image-batch", 2,
                 "--real-batch", 0, "--snapshot-every", 1, "-q")  # fmt: skip
    assert res.output == ""
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as fh:
        meta = json.loads(fh.metadata()["facebatch"])
    from facebatch.nets.cache import sha256_of

    assert meta["format"] == "facebatch-encoder" and meta["generator_sha256"] == sha256_of(generator_file)
    assert meta["images_seen"] == 8 and meta["recipe"]["settings"]["batch"] == 4
    again = invoke("encoder", "train", "-g", generator_file, "-o", out, "--iters", 2, code=2)
    assert "--overwrite" in again.output
    bad = invoke("encoder", "train", "-g", generator_file, "-o", tmp_path / "x.safetensors", "--image-batch", 64,
                 code=2)  # fmt: skip
    assert "--image-batch" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_encoder_files_are_data_and_checked(nets, trained, tmp_path):
    from safetensors.torch import save_file

    from facebatch.nets.encoder import read_encoder

    with pytest.raises(CheckpointError, match="not a facebatch encoder"):
        read_encoder(nets.path)  # a generator file is not an encoder
    save_file({"x": torch.zeros(1)}, str(tmp_path / "e.safetensors"), metadata={"facebatch": json.dumps(
        {"format": "facebatch-encoder", "format_version": 1, "encoder_kwargs": {"resolution": 2**40}}
    )})  # fmt: skip
    with pytest.raises(CheckpointError, match="resolution"):
        read_encoder(tmp_path / "e.safetensors")  # a settings bomb is refused before anything is built
    good = read_encoder(trained[0])
    tensors = {k: v for k, v in good.encoder.state_dict().items()}
    tensors["stem.0.weight"] = torch.zeros(1)
    from safetensors import safe_open

    with safe_open(str(trained[0]), framework="pt") as fh:
        meta = fh.metadata()
    save_file(tensors, str(tmp_path / "f.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="stem.0.weight"):
        read_encoder(tmp_path / "f.safetensors")
    tensors = {k: v.clone() for k, v in good.encoder.state_dict().items()}
    tensors["heads.0.linear.bias"][3] = float("nan")  # a poisoned weight would silently give NaN codes
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        read_encoder(tmp_path / "nan.safetensors")


def test_half_precision_files_are_half_the_size_and_encode_alike(nets, trained, tmp_path):
    from facebatch.encoder.api import encode
    from facebatch.nets.encoder import read_encoder, write_encoder

    full = read_encoder(trained[0])
    half = write_encoder(tmp_path / "half.safetensors", full.encoder, full.generator_sha256, 7, {}, half=True)
    assert half.stat().st_size < 0.55 * trained[0].stat().st_size
    back = read_encoder(half)
    assert back.images_seen == 7 and next(back.encoder.parameters()).dtype == torch.float32
    _, images = samples(nets, range(8))
    a, b = encode(images, full), encode(images, back)
    assert not np.array_equal(a, b)  # the weights were rounded ...
    assert np.abs(a - b).max() < 1e-2 * np.abs(a).max()  # ... and the codes barely move


def test_project_with_the_encoder_presets(generator_file, nets, trained, tmp_path):
    from PIL import Image

    from facebatch.pipeline.latents import read_latent_table
    from facebatch.pipeline.rundir import RunDir

    _, images = samples(nets, range(300, 304))
    (tmp_path / "in").mkdir()
    for i, img in enumerate(images):
        arr = ((img.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(tmp_path / "in" / f"{i}.png")
    common = ["project", tmp_path / "in", "-g", generator_file, "--workers", 0, "-q", "--set", "perceptual=none"]
    invoke(*common, "-o", tmp_path / "E", "--preset", "encoder", "--encoder", trained[0])
    encoded = RunDir(tmp_path / "E")
    table = read_latent_table(encoded.table_dir)
    frame = table.frame
    assert (frame.status == "ok").all() and (frame.steps == 0).all()
    assert frame.encoder_consistency.notna().all() and (frame.encoder_consistency >= 0).all()
    run = json.loads(encoded.run_file.read_text())
    assert json.dumps(run).count(trained[0].name) or "encoder" in json.dumps(run)
    # hybrid: the encoder's code refined; better than the encoder alone on the same images
    invoke(*common, "-o", tmp_path / "H", "--preset", "hybrid", "--steps", 15, "--encoder", trained[0])
    hybrid = read_latent_table(RunDir(tmp_path / "H").table_dir).frame
    assert hybrid.psnr.mean() > frame.psnr.mean()
    # no encoder for this generator in the registry: one line naming what to do
    res = invoke(*common, "-o", tmp_path / "N", "--preset", "encoder", code=2)
    assert "facebatch encoder train" in res.output and len(res.output.strip().splitlines()) == 1


def test_an_encoder_for_another_generator_is_refused(generator_file, trained, tmp_path):
    other = dict(G_KWARGS)
    torch.manual_seed(5)
    path = write_native(tmp_path / "G2.safetensors", other, Generator(**other).state_dict())
    (tmp_path / "in").mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), "gray").save(tmp_path / "in" / "a.png")
    res = invoke("project", tmp_path / "in", "-g", path, "-o", tmp_path / "o", "--preset", "encoder",
                 "--encoder", trained[0], "--workers", 0, "-q", code=2)  # fmt: skip
    assert "was trained for the generator with sha256" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_the_builtin_encoder_is_found_for_celeba64_and_reads_its_samples():
    """The registry pins it (sha256 checked on load), celeba64 names it, and on the generator's own samples it
    lands far nearer than the mean face (measured: 18.5 dB on 8 samples against ~9 dB)."""
    from facebatch import encode, load_encoder, load_generator
    from facebatch.invert.scores import score_pairs
    from facebatch.nets.sampling import z_from_seeds

    nets = load_generator("celeba64", with_d=False)
    enc = load_encoder(generator=nets)
    assert enc.generator_sha256 == nets.sha256 and enc.images_seen == 80_000
    G = nets.G
    with torch.no_grad():
        images = G(z_from_seeds(range(10_000, 10_008), G.z_dim), None, noise_mode="const").clamp(-1, 1)
        recon = G.synthesis(torch.from_numpy(encode(images, enc)), noise_mode="const")
        mean = G.synthesis(G.mapping.w_avg.reshape(1, 1, -1).repeat(8, G.num_ws, 1), noise_mode="const")
    got = score_pairs(images, recon, perceptual=None)["psnr"].mean()
    assert got > score_pairs(images, mean, perceptual=None)["psnr"].mean() + 5 and got > 16
