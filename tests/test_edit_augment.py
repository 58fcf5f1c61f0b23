"""`facebatch augment` end to end on the 64-px fixture generator: files, rows, exact distances, noise, resume."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_latents
from PIL import Image
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.edit.boundaries_io import save_boundaries
from facebatch.edit.boundary import Boundary
from facebatch.nets.cache import sha256_of
from facebatch.pipeline.images import tensor_to_pil
from facebatch.pipeline.latents import read_latent_table
from facebatch.pipeline.noise_store import NoiseWriter
from facebatch.sheets import GRID_HEADER as HEADER
from facebatch.sheets import ROW_LABEL_WIDTH

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, nvlabs_G, fixture_generator_path):
    """A project-like OUT: 4 rows (one an error row) of W+ codes from the fixture generator + boundaries."""
    torch.set_num_threads(1)
    G = nvlabs_G
    tmp = tmp_path_factory.mktemp("aug")
    sha = sha256_of(fixture_generator_path)
    with torch.no_grad():
        ws = G.mapping(torch.from_numpy(np.random.RandomState(0).randn(4, G.z_dim).astype(np.float32)), None)
    ws = (ws + 0.1 * torch.randn(ws.shape, generator=torch.Generator().manual_seed(0))).numpy()
    ok = np.array([True, True, False, True])
    ids = ["a/0.jpg", "a/1.jpg", "broken.jpg", "b/3.jpg"]
    write_latents(tmp / "OUT", ids, ws, ok, sha=sha)
    rng = np.random.default_rng(1)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    bounds = [
        Boundary(
            "age", "w", list(range(G.num_ws)), G.num_ws, unit(rng.standard_normal(G.w_dim)), 0.3, generator_sha256=sha
        ),
        Boundary(
            "gender",
            "w",
            list(range(G.num_ws)),
            G.num_ws,
            unit(rng.standard_normal(G.w_dim)),
            -0.1,
            generator_sha256=sha,
        ),
        Boundary("other_gan", "w", [0], G.num_ws, unit(rng.standard_normal(G.w_dim)), 0.0, generator_sha256="cd" * 32),
    ]
    save_boundaries(tmp / "B.json", bounds)
    return tmp, ws, ok, ids, bounds


def augment(tmp, *args):
    return runner.invoke(
        app,
        [
            "augment",
            "--latents",
            str(tmp / "OUT"),
            "--boundaries",
            str(tmp / "B.json"),
            "--workers",
            "0",
            "-q",
            *map(str, args),
        ],
    )


def assert_same_png(png, expected):
    """Equal up to one 8-bit level: batch size changes float summation order, so a pixel may round the other way."""
    diff = np.abs(png.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01


def render(G, w, noise=None):
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(w[None], dtype=np.float32))
        img = G.synthesis(t, noise=noise) if noise is not None else G.synthesis(t, noise_mode="const")
    return np.asarray(tensor_to_pil(img[0]))


def test_augment_writes_images_manifest_and_sheet(run_dir, nvlabs_G, fixture_generator_path):
    tmp, ws, ok, ids, bounds = run_dir
    aug = tmp / "AUG"
    res = augment(
        tmp,
        "--attr",
        "age",
        "--strengths",
        "-2",
        "1.5",
        "--condition",
        "gender",
        "-g",
        fixture_generator_path,
        "--out",
        aug,
        "--shard-size",
        "4",
    )
    assert res.exit_code == 0, res.output
    manifest = read_latent_table(aug / "manifest")
    frame, edited = manifest.frame, manifest.latent("w")
    assert len(frame) == 3 * 2 and set(frame.status) == {"ok"}  # the error row is not edited
    assert set(frame.source_image_id) == {"a/0.jpg", "a/1.jpg", "b/3.jpg"}
    assert frame.image_id.iloc[0] == "a/0.jpg@age=-2"
    assert list(frame.condition.iloc[0]) == ["gender"] and set(frame["mode"]) == {"relative"}
    age, gender = bounds[0], bounds[1]
    src = {i: ws[k] for k, i in enumerate(ids)}
    before = np.stack([src[i] for i in frame.source_image_id])
    np.testing.assert_allclose(age.distance(edited) - age.distance(before), frame.strength, atol=1e-4)
    np.testing.assert_allclose(frame.distance_after - frame.distance_before, frame.strength, atol=1e-4)
    np.testing.assert_allclose(gender.distance(edited), gender.distance(before), atol=1e-4)
    for _, row in frame.iterrows():
        assert row.path == f"images/age/{row.strength:+g}/{row.source_image_id.rsplit('.', 1)[0]}.png"
    # Each PNG is the generator's rendering of the manifest's edited latent (const noise: none was saved).
    assert_same_png(np.asarray(Image.open(aug / frame.path.iloc[0])), render(nvlabs_G, edited[0]))
    sheet = Image.open(aug / "contact_sheets" / "age.png")
    # rows labelled by id; columns original | reconstruction (strength 0) | -2 | +1.5
    assert sheet.size == (ROW_LABEL_WIDTH + 4 * 64, HEADER + 3 * 64)
    recon = aug / "contact_sheets" / "reconstructions" / "a" / "0.png"  # a/0.jpg's unedited latent, rendered
    assert_same_png(np.asarray(Image.open(recon)), render(nvlabs_G, src["a/0.jpg"]))
    cell = np.asarray(sheet.convert("RGB"))[HEADER + 2 : HEADER + 62, ROW_LABEL_WIDTH + 66 : ROW_LABEL_WIDTH + 126]
    assert_same_png(cell, np.asarray(Image.open(recon).convert("RGB"))[2:-2, 2:-2])  # inside the 2-px frame
    # pandas reads the manifest as any facebatch table.
    assert len(pd.read_parquet(aug / "manifest")) == 6

    # A rerun resumes (nothing to do); other settings in the same OUT are refused.
    part = aug / "manifest" / "part-00000.parquet"
    stamp = part.stat().st_mtime_ns
    again = augment(
        tmp,
        "--attr",
        "age",
        "--strengths",
        "-2",
        "1.5",
        "--condition",
        "gender",
        "-g",
        fixture_generator_path,
        "--out",
        aug,
        "--shard-size",
        "4",
    )
    assert again.exit_code == 0, again.output
    assert part.stat().st_mtime_ns == stamp
    # An interrupted run (shard 1 never finished: no marker) redoes only that shard, and the sheet is whole again.
    (aug / "_stats" / "manifest" / "part-00001.json").unlink()
    (aug / "manifest" / "part-00001.parquet").unlink()
    (aug / "contact_sheets" / "age.png").unlink()
    resumed = augment(
        tmp,
        "--attr",
        "age",
        "--strengths",
        "-2",
        "1.5",
        "--condition",
        "gender",
        "-g",
        fixture_generator_path,
        "--out",
        aug,
        "--shard-size",
        "4",
    )
    assert resumed.exit_code == 0, resumed.output
    assert part.stat().st_mtime_ns == stamp
    assert read_latent_table(aug / "manifest").frame.image_id.tolist() == frame.image_id.tolist()
    assert Image.open(aug / "contact_sheets" / "age.png").size == sheet.size
    changed = augment(tmp, "--attr", "age", "--strengths", "-3", "-g", fixture_generator_path, "--out", aug)
    assert changed.exit_code == 2 and "--overwrite" in changed.output


def test_saved_noise_is_used(run_dir, nvlabs_G, fixture_generator_path):
    tmp, ws, ok, ids, _ = run_dir
    G = nvlabs_G
    rng = np.random.default_rng(5)
    maps = {
        i: [rng.standard_normal((1, r, r)).astype(np.float32) for r in G.synthesis.noise_resolutions]
        for i, o in zip(ids, ok)
        if o
    }
    writer = NoiseWriter(tmp / "OUT" / "noise" / "part-00000.npz")
    for i, m in maps.items():
        writer.add(i, m)
    writer.publish()
    try:
        res = augment(
            tmp,
            "--attr",
            "age",
            "--strengths=-1",
            "--limit",
            "1",
            "-g",
            fixture_generator_path,
            "--out",
            tmp / "AUG_NOISE",
        )
        assert res.exit_code == 0, res.output
        manifest = read_latent_table(tmp / "AUG_NOISE" / "manifest")
        assert len(manifest.frame) == 1
        noise = [torch.from_numpy(m[None]) for m in maps["a/0.jpg"]]
        png = np.asarray(Image.open(tmp / "AUG_NOISE" / manifest.frame.path.iloc[0]))
        assert_same_png(png, render(G, manifest.latent("w")[0], noise))
        const = render(G, manifest.latent("w")[0])
        assert np.abs(png.astype(int) - const.astype(int)).mean() > 5  # and it is not const noise
    finally:
        (tmp / "OUT" / "noise" / "part-00000.npz").unlink()


def test_user_errors_exit_2(run_dir, fixture_generator_path):
    tmp = run_dir[0]
    res = augment(tmp, "--attr", "beard", "-g", fixture_generator_path, "--out", tmp / "X")
    assert res.exit_code == 2 and "unknown attribute 'beard'" in res.output and "age, gender" in res.output
    res = augment(tmp, "--attr", "other_gan", "-g", fixture_generator_path, "--out", tmp / "X")
    assert res.exit_code == 2 and "--force" in res.output
    res = augment(tmp, "--attr", "age", "--strengths", "-1", "x", "-g", fixture_generator_path, "--out", tmp / "X")
    assert res.exit_code == 2 and "unexpected argument 'x'" in res.output
    res = augment(
        tmp,
        "--attr",
        "age",
        "--condition",
        "age,gender",
        "--layers",
        "0-99",
        "-g",
        fixture_generator_path,
        "--out",
        tmp / "X",
    )
    assert res.exit_code == 2 and "out of range" in res.output
    assert not (tmp / "X" / "manifest").exists()


@pytest.mark.slow
def test_augment_on_a_local_dask_worker(run_dir, fixture_generator_path):
    """The stage's setup/process travel to a real worker process (top-level functions, no model pickled)."""
    tmp = run_dir[0]
    res = runner.invoke(
        app,
        [
            "augment",
            "--latents",
            str(tmp / "OUT"),
            "--boundaries",
            str(tmp / "B.json"),
            "-q",
            "--workers",
            "1",
            "--attr",
            "age,gender",
            "--strengths",
            "-1,1",
            "-g",
            str(fixture_generator_path),
            "--out",
            str(tmp / "AUG_DASK"),
            "--shard-size",
            "5",
        ],
    )
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(tmp / "AUG_DASK" / "manifest", columns=["image_id", "status"])
    assert len(frame) == 3 * 2 * 2 and set(frame.status) == {"ok"}
    assert (tmp / "AUG_DASK" / "contact_sheets" / "gender.png").exists()


@pytest.mark.slow  # ~55 s on the shared 2-core box, mostly the projector's setup; the format is covered above
def test_noise_saved_by_project_is_found_per_part(tmp_path, data_dir, nvlabs_G, fixture_generator_path):
    """The real producer: `project --save-noise` with one image per shard, so each latent's noise is in
    the npz named like its Parquet part; augment must render every edit with its own image's maps."""
    from facebatch.pipeline.noise_store import read_noise

    torch.set_num_threads(1)
    inp = tmp_path / "in"
    inp.mkdir()
    for src in sorted((data_dir / "faces_aligned").glob("*.jpg"))[:2]:
        (inp / src.name).symlink_to(src)
    out, aug = tmp_path / "OUT", tmp_path / "AUG"
    res = runner.invoke(
        app,
        [
            "project",
            str(inp),
            "-g",
            str(fixture_generator_path),
            "-o",
            str(out),
            "--steps",
            "1",
            "--set",
            "w_avg_samples=64",
            "--set",
            "perceptual=none",
            "--set",
            "noise_optimization=joint",
            "--save-noise",
            "--shard-size",
            "1",
            "--workers",
            "0",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    assert len(list((out / "noise").glob("part-*.npz"))) == 2
    bounds = tmp_path / "B.json"
    direction = np.random.default_rng(3).standard_normal(nvlabs_G.w_dim)
    save_boundaries(
        bounds,
        [Boundary("d", "w", list(range(nvlabs_G.num_ws)), nvlabs_G.num_ws, direction / np.linalg.norm(direction), 0.0)],
    )
    res = runner.invoke(
        app,
        [
            "augment",
            "--latents",
            str(out),
            "--boundaries",
            str(bounds),
            "--attr",
            "d",
            "--strengths=2",
            "--workers",
            "0",
            "-q",
            "--out",
            str(aug),
        ],
    )  # generator from OUT/_run.json
    assert res.exit_code == 0, res.output
    manifest = read_latent_table(aug / "manifest")
    assert len(manifest.frame) == 2 and set(manifest.frame.status) == {"ok"}
    for k, row in manifest.frame.iterrows():
        (part,) = [
            p
            for p in (out / "noise").glob("part-*.npz")
            if row.source_image_id in {n.rsplit("/noise", 1)[0] for n in np.load(p).files}
        ]
        noise = [torch.from_numpy(m[None]) for m in read_noise(part, row.source_image_id)]
        assert_same_png(np.asarray(Image.open(aug / row.path)), render(nvlabs_G, manifest.latent("w")[k], noise))
