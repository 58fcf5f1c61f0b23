"""The package's public functions: importable from `facebatch`, lazily, and the commands' own results."""

import subprocess
import sys

import numpy as np

import facebatch


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
