"""`facebatch augment --shift`: a run's latents rendered through NADA-shifted generators (tiny random networks).

Every shifted image is the shifted generator's rendering of the run's latent (or of its edit) with
the run's saved noise maps, and its manifest row links it to the source image and to the generator
file and sha256 that drew it. A generator of another architecture, or a NADA generator trained
from another base, is one line and exit 2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_latents
from PIL import Image
from test_nada import CLIP_CFG, G_KWARGS, TEMPLATES
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.edit.boundaries_io import save_boundaries
from facebatch.edit.boundary import Boundary
from facebatch.nets.cache import sha256_of
from facebatch.nets.checkpoints import load_networks
from facebatch.nets.native_format import write_native
from facebatch.nets.stylegan2 import Generator
from facebatch.pipeline.images import tensor_to_pil
from facebatch.pipeline.latents import read_latent_table
from facebatch.pipeline.noise_store import NoiseWriter

runner = CliRunner()
IDS = ["a/0.jpg", "a/1.jpg", "broken.jpg", "b/3.jpg"]
OK = np.array([True, True, False, True])


def tiny_generator(path, seed, **synthesis):
    torch.manual_seed(seed)
    kwargs = {**G_KWARGS, "synthesis_kwargs": {**G_KWARGS["synthesis_kwargs"], **synthesis}}
    G = Generator(**kwargs)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    return write_native(path, kwargs, G.state_dict())


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_torch_thread):
    """A project-like OUT (3 ok rows + an error row, saved noise maps), a boundary, two NADA generators."""
    import open_clip

    from facebatch.domain_shift.api import run_nada
    from facebatch.nets.clip import write_clip

    tmp = tmp_path_factory.mktemp("shift")
    g_path = tiny_generator(tmp / "G.safetensors", 0)
    G = load_networks(g_path, with_d=False).G
    sha = sha256_of(g_path)
    with torch.no_grad():
        ws = G.mapping(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(1))).numpy()
    write_latents(tmp / "OUT", IDS, ws, OK, sha=sha)
    rng = np.random.default_rng(2)
    noise = {
        i: [rng.standard_normal((1, r, r)).astype(np.float32) for r in G.synthesis.noise_resolutions]
        for i, o in zip(IDS, OK)
        if o
    }
    writer = NoiseWriter(tmp / "OUT" / "noise" / "part-00000.npz")
    for i, maps in noise.items():
        writer.add(i, maps)
    writer.publish()
    direction = rng.standard_normal(G.w_dim)
    save_boundaries(
        tmp / "B.json",
        [Boundary("d", "w", list(range(G.num_ws)), G.num_ws, direction / np.linalg.norm(direction), 0.0, sha)],
    )
    clip_path = tmp / "clip.safetensors"
    write_clip(clip_path, open_clip.CLIP(**CLIP_CFG), CLIP_CFG, extra={"templates": TEMPLATES})
    common = dict(clips=[str(clip_path)], iters=2, auto_layer_batch=2, grid_seeds=(0,), device="cpu")
    run_nada(str(g_path), source="photo", target="pencil sketch", out=tmp / "G_sketch.safetensors", **common)
    run_nada(str(g_path), source="photo", target="cartoon", out=tmp / "G_cartoon.safetensors", **common)
    return tmp, g_path, ws, noise


def augment(tmp, g_path, *args):
    base = ["augment", "--latents", str(tmp / "OUT"), "-g", str(g_path), "--workers", "0", "-q"]
    return runner.invoke(app, [*base, *map(str, args)])


def render(path, w, maps) -> np.ndarray:
    G = load_networks(path, with_d=False).G
    with torch.no_grad():
        img = G.synthesis(torch.from_numpy(w[None].astype(np.float32)), noise=[torch.from_numpy(m[None]) for m in maps])
    return np.asarray(tensor_to_pil(img[0]))


def assert_same_png(png, expected):
    diff = np.abs(png.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_shift_alone_renders_every_latent_through_each_generator(run):
    tmp, g_path, ws, noise = run
    sketch, cartoon = tmp / "G_sketch.safetensors", tmp / "G_cartoon.safetensors"
    res = augment(tmp, g_path, "--shift", sketch, "--shift", cartoon, "--out", tmp / "AUG")
    assert res.exit_code == 0, res.output
    manifest = read_latent_table(tmp / "AUG" / "manifest")
    frame = manifest.frame
    assert len(frame) == 3 * 2 and set(frame.status) == {"ok"}
    assert set(frame["shift"]) == {"G_sketch", "G_cartoon"}
    assert frame.attribute.isna().all() and frame.strength.isna().all()
    source = dict(zip(IDS, ws))
    for k, row in frame.iterrows():
        gen = sketch if row["shift"] == "G_sketch" else cartoon
        assert row.image_id == f"{row.source_image_id}@shift={row['shift']}"
        assert row.generator == str(gen.resolve()) and row.generator_sha256 == sha256_of(gen)
        assert row.path == f"images/@{row['shift']}/{row.source_image_id.rsplit('.', 1)[0]}.png"
        np.testing.assert_array_equal(manifest.latent("w")[k], source[row.source_image_id])
        png = np.asarray(Image.open(tmp / "AUG" / row.path))
        assert_same_png(png, render(gen, source[row.source_image_id], noise[row.source_image_id]))
        base = render(g_path, source[row.source_image_id], noise[row.source_image_id])
        assert np.abs(png.astype(int) - base.astype(int)).max() > 0  # the shifted generator drew it, not G
    assert (tmp / "AUG" / "contact_sheets" / "@shifts.png").exists()


def test_shift_with_edits_renders_the_edited_latents_through_the_shifted_generator(run):
    tmp, g_path, ws, noise = run
    sketch = tmp / "G_sketch.safetensors"
    res = augment(
        tmp,
        g_path,
        "--boundaries",
        tmp / "B.json",
        "--attr",
        "d",
        "--strengths=1.5",
        "--shift",
        sketch,
        "--out",
        tmp / "AUG2",
    )
    assert res.exit_code == 0, res.output
    manifest = read_latent_table(tmp / "AUG2" / "manifest")
    frame = manifest.frame
    assert len(frame) == 3 * 3 and set(frame.status) == {"ok"}  # per source: edit, shifted, shifted edit
    by_id = {row.image_id: k for k, row in frame.iterrows()}
    for src in ["a/0.jpg", "a/1.jpg", "b/3.jpg"]:
        edit, both = by_id[f"{src}@d=+1.5"], by_id[f"{src}@d=+1.5@shift=G_sketch"]
        assert frame.generator_sha256[edit] == sha256_of(g_path) and pd.isna(frame["shift"][edit])
        assert frame.generator_sha256[both] == sha256_of(sketch) and frame.path[both].startswith("images/@G_sketch/d/")
        np.testing.assert_array_equal(manifest.latent("w")[both], manifest.latent("w")[edit])
        png = np.asarray(Image.open(tmp / "AUG2" / frame.path[both]))
        assert_same_png(png, render(sketch, manifest.latent("w")[both], noise[src]))
    sheets = {p.name for p in (tmp / "AUG2" / "contact_sheets").iterdir() if p.is_file()}
    assert sheets == {"d.png", "d@G_sketch.png", "@shifts.png"}


def test_bad_shifts_are_one_line_and_exit_2(run, tmp_path):
    tmp, g_path, _, _ = run
    other = tiny_generator(tmp_path / "wide.safetensors", 1, channel_max=16)
    res = augment(tmp, g_path, "--shift", other, "--out", tmp_path / "A")
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "architecture" in res.output, res.output
    # same architecture, but a NADA generator trained from another base generator
    base2 = tiny_generator(tmp_path / "G2.safetensors", 7)
    from facebatch.domain_shift.train import read_nada_metadata

    shifted = load_networks(tmp / "G_sketch.safetensors", with_d=False)
    meta = read_nada_metadata(tmp / "G_sketch.safetensors")
    meta["base_generator"]["sha256"] = sha256_of(base2)
    base_info = meta.pop("base_generator")
    write_native(
        tmp_path / "foreign.safetensors",
        shifted.g_kwargs,
        shifted.G.state_dict(),
        extra={"nada": meta, "base_generator": base_info},
    )
    res = augment(tmp, g_path, "--shift", tmp_path / "foreign.safetensors", "--out", tmp_path / "A")
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "--force" in res.output, res.output
    state = {k: v.clone() for k, v in shifted.G.state_dict().items()}
    state["synthesis.b4.conv1.weight"].view(-1)[0] = float("nan")  # trained into NaN: would render black
    write_native(tmp_path / "nan.safetensors", shifted.g_kwargs, state)
    res = augment(tmp, g_path, "--shift", tmp_path / "nan.safetensors", "--out", tmp_path / "A")
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "NaN or infinite" in res.output, res.output
    res = augment(tmp, g_path, "--shift", tmp_path / "missing.safetensors", "--out", tmp_path / "A")
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    res = augment(tmp, g_path, "--out", tmp_path / "A")
    assert res.exit_code == 2 and "--shift" in res.output, res.output
    assert not (tmp_path / "A" / "manifest").exists()


def test_sheet_labels_are_cut_to_their_column_width():
    # 64-px cells: two generator names side by side overlapped before; now each label fits its column
    from PIL import Image, ImageDraw

    from facebatch.sheets import fit_label

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    assert fit_label(draw, "+1.5", 59) == "+1.5"
    cut = fit_label(draw, "celeba64-eyeglasses", 59)
    assert cut.endswith("~") and draw.textlength(cut) <= 59 and "celeba64-eyeglasses".startswith(cut[:-1])
