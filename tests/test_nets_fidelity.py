"""Our networks, loaded from weights written by the official implementations, reproduce their outputs."""

import pytest
import torch
from conftest import REFERENCE, require

from facebatch.nets.rosinality import convert_rosinality
from facebatch.nets.stylegan2 import Discriminator, Generator

TOL = 1e-4


def max_diff(a, b):
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def nv_io():
    return torch.load(require(REFERENCE / "nvlabs_sg2ada_64_io.pt"), weights_only=True)


@pytest.fixture(scope="module")
def ros():
    w = torch.load(require(REFERENCE / "rosinality_64_weights.pt"), weights_only=True)
    io = torch.load(require(REFERENCE / "rosinality_64_io.pt"), weights_only=True)
    gk, gsd, dk, dsd = convert_rosinality(w)
    G, D = Generator(**gk).eval(), Discriminator(**dk).eval()
    G.load_state_dict(gsd, strict=True)
    D.load_state_dict(dsd, strict=True)
    return G, D, io


@torch.no_grad()
@pytest.mark.parametrize("psi,key", [(1.0, "ws_psi1"), (0.7, "ws_psi07")])
def test_nvlabs_mapping(nvlabs_G, nv_io, psi, key):
    assert max_diff(nvlabs_G.mapping(nv_io["z"], truncation_psi=psi), nv_io[key]) < TOL


@torch.no_grad()
@pytest.mark.parametrize(
    "ws_key,mode,img_key",
    [
        ("ws_psi1", "const", "img_const_psi1"),
        ("ws_psi07", "none", "img_none_psi07"),
        ("ws_wplus", "const", "img_const_wplus"),
    ],
)
def test_nvlabs_synthesis(nvlabs_G, nv_io, ws_key, mode, img_key):
    img = nvlabs_G.synthesis(nv_io[ws_key], noise_mode=mode)
    assert max_diff(img, nv_io[img_key]) < TOL


@torch.no_grad()
@pytest.mark.parametrize("img_key", ["img_const_psi1", "img_none_psi07"])
def test_nvlabs_discriminator(nvlabs_D, nv_io, img_key):
    assert max_diff(nvlabs_D(nv_io[img_key]), nv_io[f"d_logits_of_{img_key}"]) < TOL


@torch.no_grad()
def test_rosinality_generator(ros):
    G, _, io = ros
    assert max_diff(G(io["z"]), io["img_const_psi1"]) < TOL
    assert max_diff(G.synthesis(io["wplus"]), io["img_const_wplus"]) < TOL
    w_avg = G.mapping.w_avg.clone()
    try:
        G.mapping.w_avg.copy_(io["mean_latent"].reshape(-1))
        assert max_diff(G(io["z"], truncation_psi=0.7), io["img_const_psi07"]) < TOL
    finally:
        G.mapping.w_avg.copy_(w_avg)


@torch.no_grad()
def test_rosinality_discriminator(ros):
    _, D, io = ros
    assert max_diff(D(io["img_const_psi1"]), io["d_logits_of_img_const_psi1"]) < TOL


def test_rosinality_widths_come_from_shapes(ros):
    G, D, _ = ros
    # The fixture's widths are not rosinality's table (512 at 4..32 px): they must be read from tensors.
    assert G.synthesis.channels == {4: 96, 8: 96, 16: 96, 32: 96, 64: 48}
    assert D.channels[64] == 48 and D.channels[4] == 96


@torch.no_grad()
def test_truncation_cutoff_only_touches_first_layers(nvlabs_G, nv_io):
    ws_full = nvlabs_G.mapping(nv_io["z"])
    ws_cut = nvlabs_G.mapping(nv_io["z"], truncation_psi=0.5, truncation_cutoff=4)
    assert torch.equal(ws_cut[:, 4:], ws_full[:, 4:])
    expected = nvlabs_G.mapping.w_avg.lerp(ws_full[:, :4], 0.5)
    assert max_diff(ws_cut[:, :4], expected) < 1e-6


@torch.no_grad()
def test_per_sample_noise_equals_const_buffers_and_is_per_sample(nvlabs_G, nv_io):
    syn = nvlabs_G.synthesis
    ws = nv_io["ws_psi1"]
    const_maps = [layer.noise_const for block in syn.blocks() for layer in block.noise_layers()]
    assert [m.shape[-1] for m in const_maps] == syn.noise_resolutions
    noise = [m.expand(len(ws), 1, *m.shape) for m in const_maps]
    assert max_diff(syn(ws, noise=noise), syn(ws, noise_mode="const")) < 1e-5
    # Changing one sample's noise changes only that sample's image.
    noise2 = [n.clone() for n in noise]
    noise2[-1][2] = torch.randn_like(noise2[-1][2])
    a, b = syn(ws, noise=noise), syn(ws, noise=noise2)
    changed = (a - b).flatten(1).abs().amax(dim=1)
    assert changed[2] > 1e-3 and changed[[0, 1, 3]].max() == 0


@torch.no_grad()
def test_discriminator_features_do_not_depend_on_batch(nvlabs_D, nv_io):
    imgs = nv_io["img_const_psi1"]
    alone = torch.cat([nvlabs_D.features(imgs[i : i + 1]) for i in range(len(imgs))])
    together = nvlabs_D.features(imgs)
    assert max_diff(alone, together) < 1e-5
    # ...whereas the logits do (minibatch-std), which is why scores use features.
    logits_alone = torch.cat([nvlabs_D(imgs[i : i + 1]) for i in range(len(imgs))])
    assert (logits_alone - nvlabs_D(imgs)).abs().max() > 1e-4


@torch.no_grad()
@pytest.mark.parametrize("res", [4, 8, 32])
def test_any_resolution_builds_and_renders(res):
    G = Generator(
        z_dim=32,
        c_dim=0,
        w_dim=32,
        img_resolution=res,
        img_channels=3,
        mapping_kwargs={"num_layers": 2},
        synthesis_kwargs={"channel_base": 256, "channel_max": 16},
    )
    assert G.num_ws == 2 * (res.bit_length() - 1) - 2
    img = G(torch.randn(2, 32), noise_mode="random")
    assert img.shape == (2, 3, res, res) and torch.isfinite(img).all()
