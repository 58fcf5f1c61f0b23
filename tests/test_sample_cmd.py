"""`facebatch sample`: official seed recipe, images + latents that agree, resume, and bad options."""

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.commands.sample import SampleOptions
from facebatch.nets.sampling import z_from_seeds
from facebatch.pipeline.latents import read_latent_table
from facebatch.pipeline.rundir import IMAGES, RunDir

runner = CliRunner()


def test_parse_seeds():
    assert SampleOptions(seeds="0-3,10", n=0).seed_list() == [0, 1, 2, 3, 10]
    assert SampleOptions(n=3, seed=5).seed_list() == [5, 6, 7]
    assert SampleOptions(seeds=[4, 2]).seed_list() == [4, 2]


def test_bad_seeds_exit_2(tmp_path, fixture_generator_path):
    res = runner.invoke(app, ["sample", "-g", str(fixture_generator_path), "--out", str(tmp_path), "--seeds", "a-b"])
    assert res.exit_code == 2 and "--seeds" in res.output


def test_z_follows_the_official_recipe():
    z = z_from_seeds([7], 512)
    assert torch.allclose(z[0], torch.from_numpy(np.random.RandomState(7).randn(512)).float())


def test_sample_writes_images_and_matching_latents_then_resumes(tmp_path, fixture_generator_path, nvlabs_G):
    args = [
        "sample",
        "-g",
        str(fixture_generator_path),
        "--out",
        str(tmp_path),
        "-n",
        "5",
        "--seed",
        "3",
        "--truncation",
        "0.7",
        "--part-size",
        "2",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    run_dir = RunDir(tmp_path)
    tab = read_latent_table(run_dir.table_dir)
    assert list(tab.frame.image_id) == [f"seed{s:06d}.png" for s in range(3, 8)]
    assert len(list(run_dir.table_dir.glob("part-*.parquet"))) == 3
    ws = torch.from_numpy(tab.latent("w"))
    with torch.no_grad():
        expected_ws = nvlabs_G.mapping(z_from_seeds(range(3, 8), 512), truncation_psi=0.7)
        img = nvlabs_G.synthesis(ws[:1], noise_mode="const")
    assert torch.allclose(ws, expected_ws, atol=1e-5)  # batch-size rounding only
    assert tab.metadata["truncation_psi"] == 0.7 and len(tab.metadata["generator_sha256"]) == 64
    png = np.asarray(Image.open(run_dir.folder(IMAGES) / "seed000003.png"), dtype=np.float32)
    ref = ((img[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).numpy()
    assert png.shape == (64, 64, 3) and np.abs(png - ref).max() <= 1.0  # one quantisation step

    mtimes = {p: p.stat().st_mtime_ns for p in run_dir.table_dir.glob("*.parquet")}
    assert runner.invoke(app, args).exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in run_dir.table_dir.glob("*.parquet")} == mtimes

    changed = [a if a != "0.7" else "0.5" for a in args]
    res = runner.invoke(app, changed)
    assert res.exit_code == 2 and "--overwrite" in res.output


def test_run_file_names_the_generator_so_augment_needs_no_generator_flag(tmp_path, fixture_generator_path):
    from facebatch.pipeline.latents import read_index, resolve_generator

    result = CliRunner().invoke(
        app, ["sample", "-g", str(fixture_generator_path), "-n", "2", "--out", str(tmp_path / "s"), "-q"]
    )
    assert result.exit_code == 0, result.output
    path, sha = resolve_generator(None, read_index(tmp_path / "s", "w"))
    assert path == fixture_generator_path.resolve()
    assert sha == read_latent_table(RunDir(tmp_path / "s").table_dir).metadata["generator_sha256"]


def test_sample_without_images_never_runs_the_synthesis_network(tmp_path, monkeypatch, restore_torch_threads):
    """--no-images is the mapping network only (it used to render every image and drop it): same latents."""
    from facebatch.nets.stylegan2 import SynthesisNetwork

    torch.set_num_threads(1)
    calls = []
    original = SynthesisNetwork.forward

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SynthesisNetwork, "forward", spy)
    common = ["sample", "-g", "celeba64", "-n", "6", "--seed", "11", "--batch-size", "4", "-q"]
    res = runner.invoke(app, [*common, "-o", str(tmp_path / "with")])
    assert res.exit_code == 0, res.output
    assert len(calls) == 2  # two batches rendered
    calls.clear()
    res = runner.invoke(app, [*common, "--no-images", "-o", str(tmp_path / "without")])
    assert res.exit_code == 0, res.output
    assert calls == []
    assert not RunDir(tmp_path / "without").folder(IMAGES).exists()
    a, b = read_latent_table(tmp_path / "with"), read_latent_table(tmp_path / "without")
    assert list(a.frame.image_id) == list(b.frame.image_id)
    np.testing.assert_array_equal(a.latent("w"), b.latent("w"))
    np.testing.assert_array_equal(a.latent("z"), b.latent("z"))


def test_batch_and_part_sizes_are_bounded_before_anything_is_written(tmp_path, fixture_generator_path):
    base = ["sample", "-g", str(fixture_generator_path), "-o", str(tmp_path / "S"), "-n", "2"]
    for args, option, bound in (
        (["--batch-size", "0"], "--batch-size", "from 1 to 1,024"),
        (["--batch-size", "1025"], "--batch-size", "1,024"),
        (["-b", "1000000000000"], "--batch-size", "1,024"),
        (["--part-size", "0"], "--part-size", "from 1 to 100,000"),
        (["--shard-size", "1000000000000000"], "--part-size", "100,000"),
    ):
        res = runner.invoke(app, [*base, *args])
        assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
        assert option in res.output and bound in res.output, res.output
    assert not (tmp_path / "S").exists()
    res = runner.invoke(app, [*base, "--batch-size", "1024", "--part-size", "100000", "--dry-run"])
    assert res.exit_code == 0 and "2 samples in 1 parts" in res.output, res.output
