"""Perceptual backends: ST-LPIPS from the wheel's weights in our own network, lpips trunks only from a local file."""

import lpips
import pytest
import torch
import torchvision

from facebatch.errors import InputError, ModelNotAvailable
from facebatch.nets import perceptual
from facebatch.nets.perceptual import build_perceptual, stlpips_weights_path, torchvision_trunk_file


def pattern(size, phase):
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return (
        torch.stack([torch.sin(5 * x + phase), torch.cos(7 * y - phase), torch.sin(3 * (x + y) + 2 * phase)])[None]
        * 0.8
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def input_pairs():
    a = torch.cat([pattern(64, 0.0), pattern(64, 1.0)])
    b = torch.cat([pattern(64, 0.5), pattern(64, 1.0).flip(-1)])
    return a, b


@pytest.fixture(scope="module")
def pairs():
    return input_pairs()


def test_stlpips_wheel_ships_trunk_and_heads():
    state = torch.load(stlpips_weights_path(), map_location="cpu", weights_only=True)
    assert sum(k.startswith("net.slice") and k.endswith(".weight") for k in state) == 13  # all 13 VGG16 convs
    assert {f"lin{k}.model.1.weight" for k in range(5)} <= set(state)


@torch.no_grad()
def test_stlpips_vgg_matches_the_reference_implementation(pairs):
    # Values from stlpips_pytorch 0.0.2's own LPIPS(net="vgg", variant="shift_tolerant") on these
    # inputs, printed by tests/make_stlpips_golden.py (rerun it to regenerate); our network reads the same file.
    dist = build_perceptual("stlpips-vgg")(*pairs)
    assert dist.tolist() == pytest.approx([0.28508251905441284, 0.45155057311058044], abs=1e-5)


@torch.no_grad()
def test_distance_is_per_image_and_zero_for_identical_images(pairs):
    net = build_perceptual("stlpips-vgg")
    a, b = pairs
    assert net(a, a).abs().max() < 1e-6
    assert net(a[1:], b[1:])[0] == pytest.approx(net(a, b)[1].item(), rel=1e-5)


@torch.no_grad()
def test_large_images_are_area_downsampled(monkeypatch):
    assert perceptual.MAX_RESOLUTION == 256  # the NVlabs projector's size; a smaller cap keeps this test cheap
    monkeypatch.setattr(perceptual, "MAX_RESOLUTION", 32)
    net = build_perceptual("stlpips-vgg")
    a, b = pattern(64, 0.0), pattern(64, 0.7)
    small = [torch.nn.functional.interpolate(x, size=(32, 32), mode="area") for x in (a, b)]
    assert net(a, b).item() == pytest.approx(net(*small).item(), rel=1e-6)
    assert net(a, b).item() != pytest.approx(net(a[..., ::2, ::2], b[..., ::2, ::2]).item(), rel=1e-3)  # not strided


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache; networks built from it are dropped from the process cache afterwards."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    yield tmp_path
    perceptual._cached.cache_clear()


@pytest.mark.parametrize(
    "backend,file", [("lpips-vgg", "vgg16-397923af.pth"), ("lpips-alex", "alexnet-owt-7be5be79.pth")]
)
def test_lpips_without_the_trunk_file_names_it(torch_home, backend, file):
    tmp_path = torch_home
    with pytest.raises(ModelNotAvailable) as exc:
        build_perceptual(backend)
    msg = str(exc.value)
    assert file in msg and str(tmp_path / "hub" / "checkpoints") in msg and "\n" not in msg
    assert f"https://download.pytorch.org/models/{file}" in msg  # where to get it
    assert not (tmp_path / "hub" / "checkpoints" / file).exists()  # nothing was downloaded


@torch.no_grad()
def test_lpips_alex_reads_a_local_trunk_file_and_matches_the_lpips_package(torch_home, pairs):
    path, _ = torchvision_trunk_file("alex")
    torch.manual_seed(0)
    trunk = torchvision.models.alexnet(weights=None).state_dict()
    path.parent.mkdir(parents=True)
    torch.save({k: v for k, v in trunk.items() if k.startswith("features.")}, path)
    ours = build_perceptual("lpips-alex")
    assert torch.equal(ours.trunk.slice1[0].weight, trunk["features.0.weight"])
    # The lpips package's own forward with the same trunk weights gives the same distances.
    ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    ref.net.load_state_dict(ours.trunk.state_dict())
    a, b = pairs
    assert ours(a, b).tolist() == pytest.approx(ref(a, b).flatten().tolist(), rel=1e-5)


def test_unknown_backend_is_a_user_error():
    with pytest.raises(InputError, match="stlpips-vgg, lpips-vgg, lpips-alex, none"):
        build_perceptual("vgg")
    assert build_perceptual("none") is None
