"""The package's public functions: importable from `facebatch`, lazily, and the commands' own results."""

import subprocess
import sys

import numpy as np
import pytest

import facebatch
from facebatch.errors import FacebatchError


def test_public_names_resolve_and_the_cli_stays_light():
    for name in facebatch.__all__:
        assert callable(getattr(facebatch, name))
    code = "import sys, facebatch, facebatch.cli.app; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_project_images_gives_the_project_rows(fixture_generator_path, data_dir, nvlabs_G, restore_torch_threads):
    face = data_dir / "faces_aligned" / "ref_female_015248.jpg"
    nets = facebatch.load_generator(fixture_generator_path)
    table = facebatch.project_images(
        [face, data_dir / "nonfaces" / "coffee.png"],
        nets,
        preset="fast",
        device="cpu",
        overrides={"steps": 2, "perceptual": "none", "w_avg_samples": 1000},
    )
    assert list(table.frame.image_id) == [face.name, "coffee.png"] and set(table.frame.status) == {"ok"}
    assert table.latent("w").shape == (2, nvlabs_G.num_ws, nvlabs_G.w_dim)
    assert np.isfinite(table.frame.psnr).all()


def test_a_loaded_generator_maps_renders_and_samples_as_the_commands_do(fixture_generator_path):
    import torch

    from facebatch.nets.sampling import sample as sample_by_seed
    from facebatch.nets.sampling import z_from_seeds

    nets = facebatch.load_generator(fixture_generator_path, with_d=False)
    images = nets.sample([3, 7])
    _, ws, expected = sample_by_seed(nets.G, [3, 7])
    assert torch.equal(images, expected)
    assert torch.equal(nets.mapping(z_from_seeds([3, 7], nets.G.z_dim)), ws)
    assert torch.equal(nets.render(ws.numpy()), expected)  # arrays as read_latents gives them
    zeros = [torch.zeros_like(n) for n in _noise_shapes(nets, 2)]
    assert not torch.equal(nets.render(ws, noise=zeros), expected)  # the maps given are used
    torch.testing.assert_close(nets.sample(3), expected[:1], rtol=0, atol=1e-5)  # one seed alone: same image
    for bad in (lambda: nets.render(ws[:, :1]), lambda: nets.mapping(torch.zeros(2, 3)), lambda: nets.sample([-1])):
        with pytest.raises(FacebatchError):
            bad()


def _noise_shapes(nets, n: int):
    import torch

    maps = [buf for name, buf in nets.G.synthesis.named_buffers() if name.endswith("noise_const")]
    return [torch.ones((n, 1, *m.shape[-2:])) for m in maps]
