"""`facebatch mix` end to end on the 64-px fixture generator with 2-3 steps: every app, --latents reuse,
per-pair error rows, whole-command errors (exit 2), resume, pair ids that cannot escape OUT.

The generator has random weights: these tests check the plumbing (files, rows, codes), not image quality.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image
from test_project_cli import _nudged_generator
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.pipeline.latents import read_latent_table
from facebatch.pipeline.rundir import IMAGES, MANIFEST, SHEETS, RunDir

runner = CliRunner()
FAST = ["--steps", "2", "--set", "w_avg_samples=64", "--workers", "0", "--threads-per-worker", "1"]
NO_PERCEPTUAL = ["--set", "perceptual=none"]

pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, data_dir) -> Path:
    """Four faces (links), a grey (non-binary) mask and a mask of the wrong aspect ratio."""
    root = tmp_path_factory.mktemp("mix_inputs")
    for src in sorted((data_dir / "faces_aligned").glob("*.jpg"))[:4]:
        os.symlink(src, root / src.name)
    grey = np.zeros((64, 64), np.uint8)
    grey[:, :32] = 200  # 200/255 > 0.5: kept; the rest 0
    Image.fromarray(grey).save(root / "grey_mask.png")
    Image.new("L", (200, 100), 255).save(root / "wide_mask.png")
    return root


def faces(inputs: Path) -> list[str]:
    return sorted(p.name for p in inputs.glob("*.jpg"))


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def mix(*args) -> object:
    return runner.invoke(app, ["mix", *map(str, args)])


def manifest(out: Path) -> pd.DataFrame:
    return pd.read_parquet(RunDir(out, MANIFEST).table_dir)


@pytest.mark.parametrize(
    "app_name, extra, rows_per_pair",
    [
        ("morph", ["--frames", "3", *NO_PERCEPTUAL], 3),
        ("crossover", NO_PERCEPTUAL, 1),
        ("crossover", ["--layers", "4", *NO_PERCEPTUAL], 1),
        ("inpaint", ["--hole", "mouth", *NO_PERCEPTUAL], 1),
        ("style", ["--mask", "eyes"], 1),
        ("expression", NO_PERCEPTUAL, 1),
    ],
)
def test_each_app_end_to_end(tmp_path, inputs, fixture_generator_path, app_name, extra, rows_per_pair):
    f = faces(inputs)
    pairs = write_csv(inputs / f"pairs_{app_name}_{len(extra)}.csv", [{"a": f[0], "b": f[1]}, {"a": f[2], "b": f[3]}])
    out = tmp_path / "out"
    res = mix(app_name, pairs, "-o", out, "-g", fixture_generator_path, *FAST, *extra)
    assert res.exit_code == 0, res.output
    frame = manifest(out)
    assert len(frame) == 2 * rows_per_pair and set(frame.status) == {"ok"} and set(frame.app) == {app_name}
    for p in [*frame.path, *frame.input_path.dropna(), *frame.animation.dropna()]:
        assert (out / p).is_file() and (out / p).resolve().is_relative_to(out.resolve())
    run_dir = RunDir(out, MANIFEST)
    assert (run_dir.folder(SHEETS) / f"{app_name}.png").is_file()
    w = read_latent_table(run_dir.table_dir).latent("w")
    assert w.shape == (len(frame), 10, 512) and np.isfinite(w).all()  # the fixture has 10 W+ layers
    run = json.loads(run_dir.run_file.read_text())
    assert run["stage"] == "mix" and run["config"]["app"] == app_name and run_dir.success_file.exists()
    assert frame.projected.all()
    if app_name == "morph":
        assert frame.t.tolist() == [0.0, 0.5, 1.0] * 2
        with Image.open(out / frame.animation[0]) as gif:
            assert gif.n_frames == 4  # forward and back
    if app_name == "inpaint":
        assert set(frame["mask"]) == {"mouth"} and np.isfinite(frame.psnr_hole).all()
    if app_name == "style":
        assert np.isfinite(frame.style_distance).all() and json.loads(frame.params[0])["style_weight"] == 0.2
    if app_name == "crossover" and "--layers" not in extra:
        assert np.isfinite(frame.psnr_a).all() and np.isfinite(frame.psnr_b).all()


def test_latents_reuse_codes_without_projecting(tmp_path, inputs, fixture_generator_path):
    f = faces(inputs)
    run = tmp_path / "proj"
    res = runner.invoke(
        app,
        ["project", str(inputs), "-g", str(fixture_generator_path), "-o", str(run), *FAST, *NO_PERCEPTUAL, "-q"],
    )
    assert res.exit_code == 0, res.output
    codes = read_latent_table(run)
    w = dict(zip(codes.frame.image_id, codes.latent("w")))

    pairs = write_csv(tmp_path / "pairs.csv", [{"a": f[0], "b": f[1]}])
    out = tmp_path / "morph"
    res = mix("morph", pairs, "-o", out, "--latents", run, "--frames", "3", *FAST)  # -g from the run
    assert res.exit_code == 0, res.output
    frame = manifest(out)
    ws = read_latent_table(RunDir(out, MANIFEST).table_dir).latent("w")
    assert not frame.projected.any() and frame.steps.isna().all()
    assert np.array_equal(ws[0], w[f[0]]) and np.array_equal(ws[-1], w[f[1]])  # endpoints are the run's codes
    np.testing.assert_allclose(ws[1], (w[f[0]] + w[f[1]]) / 2, atol=1e-6)

    neutral = write_csv(tmp_path / "neutral.csv", [{"a": f[0], "b": f[1], "neutral": f[2]}])
    res = mix("expression", neutral, "-o", tmp_path / "expr", "--latents", run, "-g", fixture_generator_path, *FAST)
    assert res.exit_code == 0, res.output
    ws = read_latent_table(RunDir(tmp_path / "expr", MANIFEST).table_dir).latent("w")
    assert manifest(tmp_path / "expr").variant.tolist() == ["offset"]
    np.testing.assert_allclose(ws[0], w[f[0]] + w[f[1]] - w[f[2]], atol=1e-5)

    # Another generator, or runs of two generators: refused before any work.
    other = _nudged_generator(fixture_generator_path, tmp_path / "other.pt")
    res = mix("morph", pairs, "-o", tmp_path / "x", "--latents", run, "-g", other, *FAST)
    assert res.exit_code == 2 and "generator" in res.output and not (tmp_path / "x").exists()
    other_run = tmp_path / "proj_other"
    RunDir(other_run).table_dir.mkdir(parents=True)
    for part in RunDir(run).table_dir.glob("*.parquet"):
        table = pq.read_table(part)
        meta = json.loads(table.schema.metadata[b"facebatch"])
        meta["generator_sha256"] = "0" * 64
        table = table.replace_schema_metadata({**table.schema.metadata, b"facebatch": json.dumps(meta).encode()})
        pq.write_table(table, RunDir(other_run).table_dir / part.name)
    res = mix("morph", pairs, "-o", tmp_path / "y", "--latents", run, "--latents", other_run, *FAST)
    assert res.exit_code == 2 and "different generators" in res.output


def test_error_rows_and_resume(tmp_path, inputs, fixture_generator_path):
    f = faces(inputs)
    pairs = write_csv(
        inputs / "pairs_errors.csv",
        [
            {"a": f[0], "b": f[1], "mask": "grey_mask.png"},
            {"a": "missing.jpg", "b": f[1], "mask": ""},
            {"a": f[2], "b": f[3], "mask": "wide_mask.png"},
            {"a": f[3], "b": f[0], "mask": "random-box"},
        ],
    )
    out = tmp_path / "out"
    args = ["crossover", pairs, "-o", out, "-g", fixture_generator_path, *FAST, *NO_PERCEPTUAL, "--shard-size", "2"]
    res = mix(*args)
    assert res.exit_code == 0, res.output
    assert "thresholded at 0.5" in res.output
    frame = manifest(out).set_index("pair_id")
    assert frame.status.tolist() == ["ok", "error", "error", "ok"]
    assert "no such image file: missing.jpg" in frame.error.iloc[1]
    assert "aspect ratio" in frame.error.iloc[2]
    assert frame.mask_thresholded.iloc[0] == True and frame.mask_thresholded.iloc[3] == False  # noqa: E712
    assert frame.w.iloc[1] is None

    run_dir = RunDir(out, MANIFEST)
    markers = sorted(run_dir.stats_dir.glob("*.json"))
    before = [m.stat().st_mtime_ns for m in markers]
    again = mix(*args)
    assert again.exit_code == 0, again.output
    assert json.loads(run_dir.run_file.read_text())["summary"]["images_processed"] == 0
    assert [m.stat().st_mtime_ns for m in markers] == before


def test_odd_pair_ids_stay_inside_out(tmp_path, inputs, fixture_generator_path):
    f = faces(inputs)
    rows = [
        {"pair_id": "../../escape", "a": f[0], "b": f[1]},
        {"pair_id": "/abs/path", "a": f[0], "b": f[1]},
        {"pair_id": "..", "a": f[0], "b": f[1]},
        {"pair_id": "Same", "a": f[0], "b": f[1]},
        {"pair_id": "same", "a": f[0], "b": f[1]},
    ]
    out = tmp_path / "nested" / "out"
    res = mix("crossover", write_csv(inputs / "odd.csv", rows), "-o", out, "--layers", "0-3", "-g",
              fixture_generator_path, *FAST, *NO_PERCEPTUAL)  # fmt: skip
    assert res.exit_code == 0, res.output
    frame = manifest(out)
    assert set(frame.status) == {"ok"}, frame.error.tolist()
    ids = frame.pair_id.tolist()
    assert len({i.casefold() for i in ids}) == 5 and all("/" not in i and not i.startswith(".") for i in ids)
    for p in frame.path:
        assert (out / p).resolve().is_relative_to((RunDir(out).folder(IMAGES) / "crossover").resolve())
    assert [p.name for p in tmp_path.iterdir()] == ["nested"] and not any(p.is_dir() for p in inputs.iterdir())


def test_whole_command_errors_exit_2(tmp_path, inputs, fixture_generator_path):
    f = faces(inputs)
    g = ["-g", str(fixture_generator_path), "--workers", "0"]
    out = tmp_path / "out"
    res = mix("morph", tmp_path / "nope.csv", "-o", out, *g)
    assert res.exit_code == 2 and "no such pairs file" in res.output
    res = mix("morph", write_csv(tmp_path / "cols.csv", [{"left": f[0], "right": f[1]}]), "-o", out, *g)
    assert res.exit_code == 2 and "lacks column(s) a, b" in res.output
    res = mix("blend", write_csv(tmp_path / "p.csv", [{"a": f[0], "b": f[1]}]), "-o", out, *g)
    assert res.exit_code == 2 and "unknown mix app 'blend'" in res.output
    res = mix("expression", tmp_path / "p.csv", "-o", out, *g, "--alpha", "0,0,1")
    assert res.exit_code == 2 and "one value per layer" in res.output
    res = mix("expression", tmp_path / "p.csv", "-o", out, *g, "--alpha-layers", "3,12")
    assert res.exit_code == 2 and "out of range" in res.output
    res = mix("crossover", tmp_path / "p.csv", "-o", out, *g, "--mask", "triangle")
    assert res.exit_code == 2 and "neither a shape" in res.output
    res = mix("style", tmp_path / "p.csv", "-o", out, *g, *NO_PERCEPTUAL)
    assert res.exit_code == 2 and "perceptual" in res.output
    assert not out.exists() and "Traceback" not in res.output


def test_a_damaged_manifest_part_is_one_line_naming_it(tmp_path):
    import pyarrow as pa

    from facebatch.errors import InputError
    from facebatch.pipeline.table import atomic_write_table
    from facebatch.stages.mix import manifest_schema, read_manifest

    table = pa.Table.from_pylist([], schema=manifest_schema(1, 1))
    good = RunDir(tmp_path, MANIFEST).part("part-00000")
    atomic_write_table(good, table)
    assert list(read_manifest(tmp_path).columns) == [n for n in table.schema.names if n != "w"]
    bad = RunDir(tmp_path, MANIFEST).part("part-00001")
    for content in (b"", b"not parquet at all" * 20, good.read_bytes()[:-40], b"PAR1" + b"\0" * 100 + b"PAR1"):
        bad.write_bytes(content)
        with pytest.raises(InputError) as info:
            read_manifest(tmp_path)
        assert str(bad) in str(info.value) and "\n" not in str(info.value), str(info.value)
