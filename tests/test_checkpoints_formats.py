"""Format sniffing and the torch.save / safetensors routes: each ends in the same networks, none runs code."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import torch
from conftest import REFERENCE, require
from safetensors.torch import save_file
from test_checkpoints_pickle import _SystemCall

from facebatch.errors import CheckpointError
from facebatch.nets.checkpoints import load_networks, sniff
from facebatch.nets.native_format import read_native, write_native
from facebatch.nets.stylegan2 import Discriminator, Generator

G_KWARGS = dict(
    z_dim=16,
    c_dim=0,
    w_dim=16,
    img_resolution=8,
    img_channels=3,
    mapping_kwargs=dict(num_layers=2),
    synthesis_kwargs=dict(channel_base=64, channel_max=16, conv_clamp=256, resample_filter=(1, 3, 3, 1)),
)
D_KWARGS = dict(
    c_dim=0, img_resolution=8, img_channels=3, channel_base=64, channel_max=16, epilogue_kwargs=dict(mbstd_group_size=2)
)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(1)
    G, D = Generator(**G_KWARGS).eval(), Discriminator(**D_KWARGS).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    return G, D


def same_outputs(a, b, n=3) -> bool:
    z = torch.randn(n, a.z_dim, generator=torch.Generator().manual_seed(7))
    return torch.equal(a(z, noise_mode="const"), b(z, noise_mode="const"))


def test_native_round_trip_gives_the_same_generator_and_discriminator(tmp_path, nets):
    G, D = nets
    path = write_native(
        tmp_path / "g.safetensors",
        G_KWARGS,
        G.state_dict(),
        D_KWARGS,
        D.state_dict(),
        extra={"nada": {"target": "pixar"}},
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp file may be left behind"
    raw = read_native(path)
    assert raw.extra == {"nada": {"target": "pixar"}}
    loaded = load_networks(path)
    assert loaded.format == "facebatch-safetensors" and loaded.D is not None
    assert same_outputs(loaded.G, G)
    img = torch.randn(2, 3, 8, 8)
    assert torch.equal(loaded.D(img), D(img))
    assert loaded.g_kwargs["synthesis_kwargs"]["resample_filter"] == [1, 3, 3, 1]


def test_format_comes_from_the_bytes_not_the_extension(tmp_path, nets):
    G, _ = nets
    native = write_native(tmp_path / "g.safetensors", G_KWARGS, G.state_dict())
    disguised = tmp_path / "g.pkl"
    shutil.copy(native, disguised)
    assert sniff(disguised) == "safetensors"
    exported = tmp_path / "export.safetensors"
    torch.save({"G_init_kwargs": G_KWARGS, "G_ema_state_dict": G.state_dict()}, exported)
    assert sniff(exported) == "zip"
    loaded = load_networks(exported)
    assert loaded.format == "nvlabs-state-dict" and loaded.D is None
    assert same_outputs(loaded.G, G) and same_outputs(load_networks(disguised).G, G)


def test_pre_zip_torch_save_files_load_through_torch_weights_only(tmp_path, nets):
    G, D = nets
    legacy = tmp_path / "old.pt"
    torch.save(
        {
            "G_init_kwargs": G_KWARGS,
            "G_ema_state_dict": G.state_dict(),
            "D_init_kwargs": D_KWARGS,
            "D_state_dict": D.state_dict(),
        },
        legacy,
        _use_new_zipfile_serialization=False,
    )
    assert sniff(legacy) == "pickle"
    loaded = load_networks(legacy)
    assert loaded.format == "nvlabs-state-dict" and loaded.D is not None and same_outputs(loaded.G, G)


def test_nvlabs_state_dict_export_fixture_loads_with_d():
    path = require(REFERENCE / "nvlabs_sg2ada_64_weights.pt")
    loaded = load_networks(path)
    assert loaded.format == "nvlabs-state-dict" and loaded.D is not None
    assert loaded.G.img_resolution == 64 and loaded.G.num_ws == 10
    assert len(loaded.sha256) == 64


@pytest.fixture(scope="module")
def rosinality_ckpt():
    return torch.load(require(REFERENCE / "rosinality_64_weights.pt"), weights_only=True)


def test_rosinality_training_checkpoint_with_argparse_args_loads(tmp_path, rosinality_ckpt):
    ckpt = {k: rosinality_ckpt[k] for k in ("g_ema", "d", "latent_avg")}
    ckpt["args"] = argparse.Namespace(size=64, n_mlp=8, channel_multiplier=1)  # what rosinality's train.py saves
    torch.save(ckpt, tmp_path / "050000.pt")
    loaded = load_networks(tmp_path / "050000.pt")
    assert loaded.format == "rosinality" and loaded.D is not None and loaded.G.img_resolution == 64


def test_rosinality_export_without_d_explains_what_is_missing(tmp_path, rosinality_ckpt):
    torch.save({"g_ema": rosinality_ckpt["g_ema"], "latent_avg": rosinality_ckpt["latent_avg"]}, tmp_path / "e4e.pt")
    loaded = load_networks(tmp_path / "e4e.pt")
    assert loaded.D is None
    with pytest.raises(
        CheckpointError, match="AnoGAN scoring needs a discriminator; .*rosinality exports often drop it"
    ):
        loaded.require_d("AnoGAN scoring")


def test_torch_save_with_a_code_payload_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    torch.save({"g_ema": {}, "hook": _SystemCall(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"refused to load: the file imports (posix|os|nt)\.system") as info:
        load_networks(tmp_path / "evil.pt")
    assert "would run code" in str(info.value) and "weights_only" not in str(info.value)
    assert not marker.exists()


def test_torchs_advice_to_load_a_refused_file_unsafely_is_never_shown(tmp_path):
    """torch's refusal opens with "Re-running `torch.load` with `weights_only` set to `False` will likely
    succeed": every one-line message made from an exception says instead that the file would run code."""
    import pickle

    from facebatch.errors import first_line

    torch.save({"hook": _SystemCall(tmp_path / "MARKER")}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError) as info:
        torch.load(tmp_path / "evil.pt", weights_only=True)
    assert "Re-running" in str(info.value)  # what torch says
    line = first_line(info.value)
    assert line.startswith("refused to load: the file imports") and "would run code" in line, line
    assert "weights_only" not in line and "Re-running" not in line
    assert first_line(ValueError("plain\nsecond")) == "plain"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p, G: torch.save({"model": G.state_dict()}, p), r"keys \['model'\]; expected a rosinality"),
        (
            lambda p, G: torch.save(
                {"G_init_kwargs": G_KWARGS, "G_ema_state_dict": {**G.state_dict(), "extra.w": torch.ones(1)}}, p
            ),
            r"generator weights do not fit .*unexpected \['extra.w'\]",
        ),
        (
            lambda p, G: torch.save(
                {"G_init_kwargs": {**G_KWARGS, "img_resolution": 16}, "G_ema_state_dict": G.state_dict()}, p
            ),
            r"generator weights do not fit .*missing \['synthesis.b16",
        ),
        (lambda p, G: save_file({"w": torch.ones(2)}, str(p)), "safetensors file without a facebatch config"),
        (lambda p, G: p.write_bytes(json.dumps({"G": 1}).encode()), "not a checkpoint facebatch can read"),
    ],
)
def test_readable_files_that_are_not_our_networks_give_one_clear_error(tmp_path, nets, make, message):
    path = tmp_path / "ckpt.bin"
    make(path, nets[0])
    with pytest.raises(CheckpointError, match=message) as info:
        load_networks(path)
    assert "\n" not in str(info.value)


def test_truncated_native_and_zip_files_are_refused(tmp_path, nets):
    G, _ = nets
    for name, writer in (
        ("n.safetensors", lambda p: write_native(p, G_KWARGS, G.state_dict())),
        ("z.pt", lambda p: torch.save({"G_init_kwargs": G_KWARGS, "G_ema_state_dict": G.state_dict()}, p)),
    ):
        full = tmp_path / name
        writer(full)
        cut = tmp_path / f"cut-{name}"
        for keep in (0.05, 0.5, 0.99):
            cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * keep)])
            with pytest.raises(CheckpointError, match="truncated"):
                load_networks(cut)


def test_missing_file_and_unknown_name_are_user_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_networks(tmp_path / "nope.pkl")
    with pytest.raises(CheckpointError, match=r"unknown model 'ffhq-9000'.*known: .*stylegan2-ffhq-1024"):
        load_networks("ffhq-9000")
