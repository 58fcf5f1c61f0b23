"""The package's public functions: importable from `facebatch`, lazily, and the commands' own results."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import facebatch
from facebatch.errors import FacebatchError, InputError


def test_public_names_resolve_and_the_cli_stays_light():
    for name in facebatch.__all__:
        assert callable(getattr(facebatch, name))
    code = "import sys, facebatch, facebatch.cli.app; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_project_in_memory_gives_the_project_rows(fixture_generator_path, data_dir, nvlabs_G, restore_torch_threads):
    face = data_dir / "faces_aligned" / "ref_female_015248.jpg"
    nets = facebatch.load_generator(fixture_generator_path)
    table = facebatch.project(
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


# -- arguments are checked where they come in ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny generator file, a run of 4 W+ codes made with it, a labels CSV and a pairs CSV naming its ids."""
    import torch
    from conftest import write_latents
    from test_nada import G_KWARGS  # 16 px, 6 W+ rows: loads and renders in milliseconds

    from facebatch.nets.cache import sha256_of
    from facebatch.nets.native_format import write_native
    from facebatch.nets.stylegan2 import Generator

    tmp = tmp_path_factory.mktemp("api")
    torch.manual_seed(0)
    g_path = write_native(tmp / "G.safetensors", G_KWARGS, Generator(**G_KWARGS).state_dict())
    ids = [f"i{i}.png" for i in range(8)]
    ws = np.random.default_rng(0).standard_normal((8, 6, 16)).astype(np.float32)
    run = write_latents(tmp / "run", ids, ws, sha=sha256_of(g_path))
    (tmp / "labels.csv").write_text("image_id,Smiling\n" + "".join(f"{i},{n % 2}\n" for n, i in enumerate(ids)))
    (tmp / "pairs.csv").write_text("a,b\ni0.png,i1.png\n")
    return {"G": g_path, "run": run, "labels": tmp / "labels.csv", "pairs": tmp / "pairs.csv", "tmp": tmp, "ws": ws}


def boundary():
    from facebatch.edit.boundary import Boundary

    return Boundary("smile", "w", list(range(6)), 6, np.full(16, 0.25), 0.0)


def refused(call, *fragments: str) -> str:
    """The call raises one InputError (a FacebatchError) of one line holding every fragment."""
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(f in message for f in fragments), message
    return message


def test_a_lone_string_where_a_list_is_expected_is_refused_not_read_letter_by_letter(tiny):
    G, run, out = str(tiny["G"]), tiny["run"], tiny["tmp"] / "never"
    cases = [
        (lambda: facebatch.project("x.jpg", G, device="cpu"), "images", "'x.jpg'"),
        (lambda: facebatch.project(Path("x.jpg"), G, device="cpu"), "images", "x.jpg"),
        (lambda: facebatch.fit_boundaries(tiny["labels"], run, attrs="Smiling"), "attrs", "['Smiling']"),
        (lambda: facebatch.fit_boundaries(tiny["labels"], run, exclude="Smiling"), "exclude"),
        (lambda: facebatch.mix("morph", tiny["pairs"], out, latents=str(run)), "latents"),
        (lambda: facebatch.nada(G, "a", "b", out / "g.st", clips="ViT-B-32:openai"), "clips"),
        (lambda: facebatch.nada(G, "a", "b", out / "g.st", grid_seeds=5), "--grid-seeds"),
        (lambda: facebatch.nada(G, "a", "b", out / "g.st", clip_weights=1.0), "clip_weights"),
        (lambda: facebatch.read_latents(run, columns="w"), "columns"),
        (lambda: facebatch.edit_latents(tiny["ws"], boundary(), 1.0, conditions=boundary()), "conditions"),
    ]
    for call, *fragments in cases:
        assert "expected a list of" in refused(call, *fragments)
    assert not out.exists()


def test_arguments_of_the_wrong_type_or_range_are_one_line_before_any_work(tiny):
    G, ws, out = str(tiny["G"]), tiny["ws"], tiny["tmp"] / "never"
    nada = {"clips": ["ViT-B-32:/nowhere"], "device": "cpu"}
    cases = [
        (lambda: facebatch.edit_latents(ws, None, 1), "boundary", "Boundary"),
        (lambda: facebatch.edit_latents(ws, boundary(), 1, layers=[99]), "[99]", "0-5"),
        (lambda: facebatch.edit_latents(ws, boundary(), 1, layers=[-1]), "[-1]", "0-5"),
        (lambda: facebatch.edit_latents(ws, boundary(), 1, layers=[1.5]), "1.5", "whole number"),
        (lambda: facebatch.edit_latents(ws, boundary(), 1, layers="0-9"), "0-9", "out of range"),
        (lambda: facebatch.load_generator(5), "generator", "int 5"),
        (lambda: facebatch.load_generator(G, device="gpu"), "--device 'gpu'"),
        (lambda: facebatch.read_latents(None), "path", "NoneType"),
        (lambda: facebatch.load_boundaries(5), "path", "int 5"),
        (lambda: facebatch.load_encoder(5), "spec"),
        (lambda: facebatch.encode(["x.jpg"], None), "encoder", "load_encoder"),
        (lambda: facebatch.project(["x.jpg"], G, seed="a", device="cpu"), "--seed 'a'"),
        (lambda: facebatch.project(["x.jpg"], G, batch_size=0, device="cpu"), "--batch-size 0"),
        (lambda: facebatch.project(["x.jpg"], G, overrides=["steps=2"], device="cpu"), "overrides"),
        (lambda: facebatch.project(["x.jpg"], 7, device="cpu"), "generator", "int 7"),
        (lambda: facebatch.mix("morph", tiny["pairs"], out, G, frames="8"), "--frames '8'", "whole number"),
        (lambda: facebatch.mix("morph", tiny["pairs"], out, G, batch_size=2.0), "--batch-size 2.0"),
        (lambda: facebatch.mix("crossover", tiny["pairs"], out, G, mask=3), "--mask", "int 3"),
        (lambda: facebatch.mix("morph", tiny["pairs"], out), "generator", "latents"),
        (lambda: facebatch.nada(G, "a", "b", out / "g.st", iters="3", **nada), "--iters '3'"),
        (lambda: facebatch.nada(G, "a", "b", out / "g.st", iters=10**9, **nada), "--iters", "100,000"),
        (lambda: facebatch.nada(G, None, "b", out / "g.st", **nada), "--source", "NoneType"),
        (lambda: facebatch.nada(G, "a", "b", out / "g.st", layers=[0.5], **nada), "--layers 0.5"),
        (lambda: facebatch.nada(G, "a", "b", out / "g.st", auto_layer_k=True, **nada), "--auto-layer-k"),
        (lambda: facebatch.train_encoder(G, out=out / "e.st", iters="3"), "--iters '3'"),
        (lambda: facebatch.train_encoder(G, out=out / "e.st", widths=8), "widths"),
        (lambda: facebatch.train_encoder(G, out=out / "e.st", mixing=float("nan")), "--mixing"),
        (lambda: facebatch.train_encoder(G, out=None), "--out", "NoneType"),
    ]
    for call, *fragments in cases:
        refused(call, *fragments)
    assert not out.exists()


def test_an_unknown_option_is_refused_naming_the_nearest_known_one(tiny):
    G, out = str(tiny["G"]), tiny["tmp"] / "never"
    cases = [
        (lambda: facebatch.mix("morph", tiny["pairs"], out, G, frame=3), "'frame'", "'frames'"),
        (lambda: facebatch.mix("crossover", tiny["pairs"], out, G, frames=3), "mix crossover", "'frames'"),
        (lambda: facebatch.mix("style", tiny["pairs"], out, G, style_wieght=0.5), "'style_weight'"),
        (lambda: facebatch.nada(G, "a", "b", out / "g.st", iter=5), "'iter'", "'iters'"),
        (lambda: facebatch.train_encoder(G, out=out / "e.st", bach=4), "'bach'", "'batch'"),
        (lambda: facebatch.fit_boundaries(tiny["labels"], tiny["run"], attr=["Smiling"]), "'attr'", "'attrs'"),
    ]
    for call, *fragments in cases:
        assert "unknown option" in refused(call, *fragments)
    assert not out.exists()


def test_valid_arguments_of_every_kind_are_still_accepted(tiny, restore_torch_threads):
    ws, b = tiny["ws"], boundary()
    plain = facebatch.edit_latents(ws, b, 1.0, layers=[0, 1, 2, 3])
    for layers in ("0-3", (3, 2, 1, 0), np.arange(4), [np.int64(i) for i in range(4)]):
        assert np.array_equal(facebatch.edit_latents(ws, b, 1.0, layers=layers), plain)
    assert np.array_equal(
        facebatch.edit_latents(ws.tolist(), b, np.float32(1.0), conditions=()), facebatch.edit_latents(ws, b, 1.0)
    )
    table = facebatch.read_latents(str(tiny["run"]), columns=("image_id", "w"))
    assert table.latent("w").shape == (8, 6, 16)
    nets = facebatch.load_generator(Path(tiny["G"]), device="cpu", with_d=False)
    report = facebatch.fit_boundaries(str(tiny["labels"]), tiny["run"], attrs=("Smiling",), exclude=[])
    assert [x.name for x in report.boundaries] == ["Smiling"]
    out = tiny["tmp"] / "morph"
    result = facebatch.mix("morph", tiny["pairs"], out, nets, latents=(tiny["run"],), frames=np.int64(3), device="cpu")
    frame = result.manifest()
    assert set(frame.status) == {"ok"} and len(frame) == 3


def test_every_batch_command_runs_as_a_function_named_like_it(
    tmp_path, fixture_generator_path, data_dir, one_torch_thread
):
    """sample -> project -> score, label -> fit_boundaries -> augment, mix, align, nada: each called, each
    returning its typed result with the files the command writes."""
    import open_clip
    from test_nada import CLIP_CFG, G_KWARGS, TEMPLATES

    from facebatch.commands.augment import AugmentResult
    from facebatch.commands.label import LabelResult
    from facebatch.commands.project import ProjectResult
    from facebatch.commands.sample import SampleResult
    from facebatch.nets.clip import write_clip
    from facebatch.nets.native_format import write_native
    from facebatch.nets.stylegan2 import Generator
    from facebatch.pipeline.rundir import ALIGNED, IMAGES, RunDir
    from facebatch.scoring.evaluate import ScoreResult
    from facebatch.scoring.report import REPORT_HTML

    fb, gen, run = facebatch, str(fixture_generator_path), {"workers": 0, "quiet": True}
    assert "celeba64" in fb.list_models("generator") and "fast" in fb.list_presets()
    samples = fb.sample(gen, tmp_path / "S", seeds=range(16), **run)
    assert isinstance(samples, SampleResult) and samples.summary.images_ok == 16
    assert len(list(RunDir(tmp_path / "S").folder(IMAGES).glob("*.png"))) == 16

    project = fb.project(
        RunDir(samples.out_dir).folder(IMAGES), gen, tmp_path / "P", steps=1, overrides=("perceptual=none",), **run
    )
    assert isinstance(project, ProjectResult) and project.summary.images_ok == 16
    assert fb.read_latents(project.out_dir).latent("w").shape[0] == 16
    scored = fb.score(project.out_dir, report_dir=tmp_path / "report", n_bootstrap=10)
    assert isinstance(scored, ScoreResult) and (tmp_path / "report" / REPORT_HTML).is_file()

    labels = fb.label(samples.out_dir, tmp_path / "labels.csv", attrs=["Smiling", "Male"], **run)
    assert isinstance(labels, LabelResult) and labels.labels.read_text().startswith("image_id,Smiling,Male")
    from facebatch.edit.fit import FitSettings

    fit = fb.fit_boundaries(labels.labels, samples.out_dir, attrs=["Smiling"], settings=FitSettings(chosen_ratio=0.5))
    from facebatch.edit.boundaries_io import save_boundaries

    save_boundaries(tmp_path / "b.json", fit.boundaries, {})
    assert fb.load_boundaries(tmp_path / "b.json")
    edited = fb.augment(
        samples.out_dir, tmp_path / "A", attributes=["Smiling"], strengths=[-1, 1], boundaries=tmp_path / "b.json",
        limit=2, **run,
    )  # fmt: skip
    assert isinstance(edited, AugmentResult) and edited.summary.images_ok == 4 and edited.sheets

    (tmp_path / "pairs.csv").write_text("a,b\nseed000000.png,seed000001.png\n")
    morph = fb.mix("morph", tmp_path / "pairs.csv", tmp_path / "M", latents=[project.out_dir], frames=3, **run)
    assert len(morph.manifest()) == 3 and morph.sheet.is_file()

    faces = fb.align(data_dir / "faces_aligned", tmp_path / "F", size=64, **run)
    assert faces.summary.images_ok >= 1 and RunDir(tmp_path / "F").folder(ALIGNED).is_dir()

    import torch

    torch.manual_seed(0)
    tiny = write_native(tmp_path / "G16.safetensors", G_KWARGS, Generator(**G_KWARGS).state_dict())
    write_clip(tmp_path / "clip.safetensors", open_clip.CLIP(**CLIP_CFG), CLIP_CFG, extra={"templates": TEMPLATES})
    clip = [str(tmp_path / "clip.safetensors")]
    shifted = fb.nada(tiny, "photo", "sketch", tmp_path / "G_sketch.safetensors", clips=clip, iters=1, grid_seeds=(0,))
    assert len(shifted.losses) == 1 and fb.load_generator(tmp_path / "G_sketch.safetensors").G is not None


def test_fit_boundaries_writes_the_file_the_command_writes(tiny):
    """With out=, the library writes the boundaries with the command's record; an existing file is refused."""
    import json

    out = tiny["tmp"] / "fitted.json"
    report = facebatch.fit_boundaries(tiny["labels"], tiny["run"], out, attrs=["Smiling"])
    written = json.loads(out.read_text())
    assert [b.name for b in report.boundaries] == list(facebatch.load_boundaries(out)) == ["Smiling"]
    assert json.dumps(written).count('"fit-boundaries"') == 1 and str(Path(tiny["run"]).resolve()) in out.read_text()
    refused(lambda: facebatch.fit_boundaries(tiny["labels"], tiny["run"], out), "exists", "--overwrite")
