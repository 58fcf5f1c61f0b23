"""`facebatch label` (folders, project runs, sample runs) and the label-free chain around it.

Everything runs on the built-in models (celeba64 generator, celeba-attrs predictor), which ship in
the package, so nothing here needs ../shared except the fixture-generator error case.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import celeba64_measured
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.commands.label import default_run_dir
from facebatch.pipeline.latents import read_latent_table
from facebatch.pipeline.rundir import IMAGES, LABELS, MANIFEST, RunDir

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread(restore_torch_threads):
    torch.set_num_threads(1)


def invoke(*args, code: int = 0):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


@pytest.fixture(scope="module")
def celeba64():
    from facebatch.nets.checkpoints import load_networks

    return load_networks("celeba64", with_d=False).G.eval()


@pytest.fixture(scope="module")
def predictor():
    from facebatch.nets.attributes import load_predictor
    from facebatch.nets.registry import get

    return load_predictor(get("celeba-attrs").fetch())


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A folder of 4 celeba64 samples as PNGs (one in a subfolder) and one broken file."""
    tmp = tmp_path_factory.mktemp("faces")
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        res = runner.invoke(app, ["sample", "-g", "celeba64", "-n", "4", "--seed", "7", "-o", str(tmp / "S"), "-q"])
    assert res.exit_code == 0, res.output
    folder = tmp / "faces"
    (folder / "sub").mkdir(parents=True)
    for k, png in enumerate(sorted(RunDir(tmp / "S").folder(IMAGES).glob("*.png"))):
        (folder / ("sub" if k == 0 else ".") / png.name).write_bytes(png.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


# --- label -----------------------------------------------------------------------------------------------------


def test_label_a_folder_bad_file_is_an_empty_row_then_resume(tmp_path, faces, predictor):
    out = tmp_path / "labels.csv"
    res = invoke("label", faces, "-o", out, "--attrs", "Smiling,Male", "--workers", "0")
    assert "1 of 5 images could not be labelled" in res.output
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df.columns) == ["image_id", "Smiling", "Male"]
    assert len(df) == 5 and df.image_id.iloc[0] == "broken.png" and "sub/seed000007.png" in set(df.image_id)
    assert (df.set_index("image_id").loc["broken.png"] == "").all()
    labels_run = RunDir(default_run_dir(out), LABELS)
    parts = pd.read_parquet(labels_run.table_dir)
    assert parts.set_index("image_id").loc["broken.png", "status"] == "error"

    from facebatch.pipeline.images import load_image

    img, _ = load_image(faces / "sub" / "seed000007.png", 64)
    with torch.no_grad():
        expected = predictor(img[None])[0, predictor.index("Smiling")].item()
    assert float(df.set_index("image_id").loc["sub/seed000007.png", "Smiling"]) == pytest.approx(expected, abs=1e-5)

    mtimes = {p: p.stat().st_mtime_ns for p in labels_run.table_dir.glob("*.parquet")}
    res = invoke("label", faces, "-o", out, "--binary", "--attrs", "Smiling", "--workers", "0")
    assert "(0 new)" in res.output  # --binary/--attrs shape the CSV only: no work redone
    assert {p: p.stat().st_mtime_ns for p in labels_run.table_dir.glob("*.parquet")} == mtimes
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df.columns) == ["image_id", "Smiling"] and set(df.Smiling) <= {"0", "1", ""}


def test_label_a_no_images_sample_run_renders_its_latents(tmp_path, celeba64, predictor):
    invoke("sample", "-g", "celeba64", "-n", "40", "--seed", "300", "--no-images", "-o", tmp_path / "S", "-q")
    out = tmp_path / "L" / "labels.csv"
    invoke("label", tmp_path / "S", "-o", out, "--workers", "0", "--shard-size", "16", "-q")
    df = pd.read_csv(out)
    tab = read_latent_table(tmp_path / "S")
    assert list(df.image_id) == list(tab.frame.image_id) and df.shape[1] == 41
    with torch.no_grad():
        img = celeba64.synthesis(torch.from_numpy(tab.latent("w")[:8]), noise_mode="const")
        expected = predictor(img).numpy()
    np.testing.assert_allclose(df.iloc[:8, 1:].to_numpy(), expected, atol=2e-6)

    # the CSV goes into fit-boundaries as is (continuous scores: InterFaceGAN's top/bottom selection)
    res = invoke(
        "fit-boundaries", out, "--latents", tmp_path / "S", "--attrs", "Smiling,Male", "--chosen-ratio", "0.25",
        "--out", tmp_path / "B.json",
    )  # fmt: skip
    assert "40 of 40 label rows matched" in res.output
    from facebatch.edit.boundaries_io import load_boundaries

    assert set(load_boundaries(tmp_path / "B.json")) == {"Smiling", "Male"}


def test_label_a_project_run_renders_or_reads_sources(tmp_path, faces):
    run = tmp_path / "P"
    invoke(
        "project", faces, "-g", "celeba64", "-o", run, "--steps", "2", "--set", "perceptual=none", "--workers", 0, "-q"
    )
    rendered = tmp_path / "render.csv"
    res = invoke("label", run, "-o", rendered, "--attrs", "Smiling", "--workers", "0")
    assert "1 of 5 images could not be labelled" in res.output and "no latent to render" in res.output
    df = pd.read_csv(rendered, dtype=str, keep_default_na=False)
    assert sorted(df.image_id) == sorted(read_latent_table(run).frame.image_id)
    assert (df.Smiling == "").sum() == 1

    source = tmp_path / "source.csv"
    invoke("label", run, "-o", source, "--from", "source", "--attrs", "Smiling", "--workers", "0", "-q")
    src = pd.read_csv(source, dtype=str, keep_default_na=False)
    assert list(src.image_id) == list(df.image_id) and (src.Smiling == "").sum() == 1
    # every row joins the run's latents (fit-boundaries' join); the unlabelled one is the run's error row
    from facebatch.edit.labels import join_ids
    from facebatch.pipeline.latents import read_index

    index = read_index(run)
    rows = join_ids(list(src.image_id), index.image_ids)
    assert (rows >= 0).all() and list(index.ok[rows]) == list(src.Smiling != "")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--predictor", "no-such-model"], "unknown predictor 'no-such-model'"),
        (["--predictor", "celeba64"], "is a generator in the registry, not a predictor"),
        (["--attrs", "Smiling,Smiles"], "unknown --attrs 'Smiles'"),
        (["--from", "render"], "--from render needs a `project` or `sample` run folder"),
        (["--threshold", "2"], "--threshold must be between 0 and 1"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, faces, args, message):
    res = invoke("label", faces, "-o", tmp_path / "l.csv", *args, code=2)
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_input_that_is_neither_images_nor_a_run_exits_2(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    res = invoke("label", tmp_path / "notes", "-o", tmp_path / "l.csv", code=2)
    assert "neither a folder of images nor a `project`/`sample` run" in res.output
    res = invoke("label", tmp_path / "notes" / "a.txt", "-o", tmp_path / "l.csv", code=2)
    assert "neither an image nor" in res.output


def test_a_generator_file_as_predictor_exits_2(tmp_path, faces):
    from facebatch.nets.registry import get

    res = invoke("label", faces, "-o", tmp_path / "l.csv", "--predictor", get("celeba64").fetch(), code=2)
    assert "is a generator checkpoint, not an attribute predictor" in res.output


def test_a_damaged_predictor_file_fails_once_before_any_shard(tmp_path, faces):
    """The predictor is loaded once on the CPU in the client: a file no worker could load (a tensor missing or of
    another shape, NaN weights, cut short) is one line and exit 2 before any shard, never a failed shard per worker."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from facebatch.nets.registry import get

    good = get("celeba-attrs").fetch()
    with safe_open(str(good), framework="pt") as fh:
        meta, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    first = sorted(tensors)[0]
    damaged = {
        "a tensor missing": {k: v for k, v in tensors.items() if k != first},
        "a tensor of another shape": {**tensors, first: torch.zeros(3)},
        "NaN weights": {k: v.float().fill_(float("nan")) if v.is_floating_point() else v for k, v in tensors.items()},
    }
    for k, (case, state) in enumerate([*damaged.items(), ("cut short", None)]):
        path = tmp_path / f"p{k}.safetensors"
        if state is None:
            path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        else:
            save_file(state, str(path), meta)
        out = tmp_path / f"l{k}.csv"
        res = invoke("label", faces, "-o", out, "--predictor", path, code=2)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and "rerun" not in res.output, (case, res.output)
        assert not out.exists() and not list(tmp_path.glob(f"l{k}_run/**/*.parquet")), case


def test_sample_run_with_no_images_has_no_sources(tmp_path):
    invoke("sample", "-g", "celeba64", "-n", "2", "--no-images", "-o", tmp_path / "S", "-q")
    res = invoke("label", tmp_path / "S", "-o", tmp_path / "l.csv", "--from", "source", code=2)
    assert "--no-images" in res.output


# --- 3./4. shipped boundaries ---------------------------------------------------------------------------------------


def test_shipped_smile_boundary_raises_smile_probability_on_held_out_samples(celeba64, predictor):
    """Fitted from predictor labels on seeds 0..19999 (make_boundaries.py), applied to 64 other seeds, +3 along
    `smile` must raise the predictor's p(Smiling): floors at 60 % of the mean rise models/celeba64/measure.py
    measured (metrics.json, the same seeds) and 10 points under the share of images that rose."""
    from facebatch.edit.apply import edit_latents
    from facebatch.edit.boundaries_io import load_boundaries
    from facebatch.nets.registry import get
    from facebatch.nets.sampling import z_from_seeds

    bounds = load_boundaries(get("celeba64").boundaries_path())
    b = bounds["smile"]
    with torch.no_grad():
        ws = celeba64.mapping(z_from_seeds(range(1_000_000, 1_000_064), celeba64.z_dim)).numpy()
        edited = edit_latents(ws, b, np.full(len(ws), 3.0))
        j = predictor.index("Smiling")
        before = predictor(celeba64.synthesis(torch.from_numpy(ws), noise_mode="const"))[:, j]
        after = predictor(celeba64.synthesis(torch.from_numpy(edited), noise_mode="const"))[:, j]
    measured = celeba64_measured()["held_out"]
    increase = float((after - before).mean())
    assert increase > 0.6 * measured["smile_plus3_rise"], increase
    assert float((after > before).float().mean()) >= measured["smile_plus3_share_up"] - 0.1


def test_shipped_age_boundary_is_oriented_older(celeba64, predictor):
    from facebatch.edit.apply import edit_latents
    from facebatch.edit.boundaries_io import load_boundaries
    from facebatch.nets.registry import get
    from facebatch.nets.sampling import z_from_seeds

    b = load_boundaries(get("celeba64").boundaries_path())["age"]
    with torch.no_grad():
        ws = celeba64.mapping(z_from_seeds(range(2_000_000, 2_000_032), celeba64.z_dim)).numpy()
        j = predictor.index("Young")
        young = []
        for s in (-3.0, 3.0):
            edited = torch.from_numpy(edit_latents(ws, b, np.full(len(ws), s)))
            young.append(float(predictor(celeba64.synthesis(edited, noise_mode="const"))[:, j].mean()))
    # + is older: p(Young) drops, by at least half the drop measure.py measured on these seeds
    assert young[0] - young[1] > 0.5 * celeba64_measured()["held_out"]["age_young_drop_minus3_to_plus3"]


def test_augment_uses_the_shipped_boundaries_with_no_boundaries_option(tmp_path):
    invoke("sample", "-g", "celeba64", "-n", "2", "--no-images", "-o", tmp_path / "S", "-q")
    res = invoke(
        "augment", "--latents", tmp_path / "S", "--attr", "smile,age", "--strengths", "3", "--out", tmp_path / "A",
        "--workers", "0",
    )  # fmt: skip
    assert "using the boundaries shipped with celeba64" in res.output
    manifest = pd.read_parquet(RunDir(tmp_path / "A", MANIFEST).table_dir)
    assert len(manifest) == 4 and (manifest.status == "ok").all()
    assert np.allclose(manifest.distance_after - manifest.distance_before, 3.0, atol=1e-4)


def test_augment_without_boundaries_for_another_generator_exits_2(tmp_path, fixture_generator_path):
    invoke("sample", "-g", fixture_generator_path, "-n", "2", "--no-images", "-o", tmp_path / "S", "-q")
    res = invoke("augment", "--latents", tmp_path / "S", "--attr", "smile", "--out", tmp_path / "A", code=2)
    assert "pass --boundaries" in res.output and len(res.output.strip().splitlines()) == 1


def test_label_replaces_only_a_csv_its_own_run_wrote(tmp_path, faces):
    """A user's file at -o is never replaced silently; the run's own CSV is rewritten by a rerun."""
    out = tmp_path / "labels.csv"
    out.write_text("image_id,Smiling\nmine.png,1\n")
    res = invoke("label", faces, "-o", out, "--attrs", "Smiling", "--workers", "0", code=2)
    assert res.output.count("\n") == 1 and "not a file facebatch wrote there" in res.output, res.output
    assert out.read_text() == "image_id,Smiling\nmine.png,1\n" and not default_run_dir(out).exists()
    out.unlink()
    invoke("label", faces, "-o", out, "--attrs", "Smiling", "--workers", "0", "-q")
    invoke("label", faces, "-o", out, "--attrs", "Smiling,Male", "--workers", "0", "-q")  # its own: rewritten
    assert pd.read_csv(out).columns.tolist() == ["image_id", "Smiling", "Male"]
    # another label run (another --out-dir) does not take over this run's CSV
    res = invoke("label", faces, "-o", out, "--out-dir", tmp_path / "other", "--workers", "0", code=2)
    assert "another facebatch run" in res.output, res.output
    # nor may a label run replace the run it reads
    run = tmp_path / "S"
    invoke("sample", "-g", "celeba64", "-n", "2", "--no-images", "-o", run, "-q")
    res = invoke("label", run, "-o", tmp_path / "s.csv", "--out-dir", run, "--overwrite", "--workers", "0", code=2)
    assert "holds a 'sample' run" in res.output and RunDir(run).table_dir.is_dir(), res.output


@pytest.mark.parametrize("name", ["=cmd|calc", "+1", "-x", "@SUM(1)", "\t=x"])
def test_a_predictor_naming_a_formula_attribute_is_refused(tmp_path, name):
    """A predictor file names its attributes: one that a spreadsheet would run from the CSV header is refused."""
    from types import SimpleNamespace

    from facebatch.errors import InputError
    from facebatch.stages.label import build_label_spec

    with pytest.raises(InputError, match="formula"):
        build_label_spec(
            source=SimpleNamespace(items=[]), predictor=SimpleNamespace(name="p"), names=["Smiling", name],
            out_dir=tmp_path, generator=None, shard_size=1, batch_size=1,
        )  # fmt: skip
