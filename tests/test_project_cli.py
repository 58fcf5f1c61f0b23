"""`facebatch project` end to end on the fixture generator: schema, resume, Ctrl-C, broken inputs, retry, noise."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image
from test_pipeline_images import raw_png
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.pipeline.latents import read_latent_table
from facebatch.pipeline.noise_store import read_noise
from facebatch.pipeline.rundir import NOISE, RunDir
from facebatch.pipeline.table import run_metadata
from facebatch.stages.common import per_image_seed

runner = CliRunner()
# One step, a small w_avg estimate, no perceptual net, one torch thread (5-10x faster than two on a shared
# 2-core box): the pipeline is under test, not the projector.
FAST = [
    "--steps",
    "1",
    "--set",
    "w_avg_samples=64",
    "--set",
    "perceptual=none",
    "--batch-size",
    "2",
    "--threads-per-worker",
    "1",
]


pytestmark = pytest.mark.usefixtures("restore_torch_threads")


def faces(data_dir: Path, dest: Path, n_aligned: int = 3) -> Path:
    """A small input folder of links to real photos (nested, mixed sizes), nothing copied."""
    dest.mkdir(parents=True)
    aligned = sorted((data_dir / "faces_aligned").glob("*.jpg"))[:n_aligned]
    for src in aligned:
        os.symlink(src, dest / src.name)
    (dest / "unaligned").mkdir()
    os.symlink(data_dir / "faces_unaligned" / "astronaut.png", dest / "unaligned" / "astronaut.png")
    return dest


def project(args: list[str], gen: Path, inp: Path, out: Path, fast: list[str] = FAST):
    return runner.invoke(app, ["project", str(inp), "-g", str(gen), "-o", str(out), *fast, *args])


def test_end_to_end_on_a_local_dask_cluster(tmp_path, data_dir, fixture_generator_path, nvlabs_G):
    inp = faces(data_dir, tmp_path / "in")
    (inp / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    run_dir = RunDir(out)
    res = project(
        ["--workers", "1", "--shard-size", "2", "--seed", "3", "--save-reconstructions"],
        fixture_generator_path,
        inp,
        out,
    )
    assert res.exit_code == 0, res.output
    assert "computed now" in res.output and "wall time" in res.output
    assert "\x1b[" not in res.output and "\r" not in res.output  # CliRunner is no terminal: no bar, no colour

    ids = [
        "empty.jpg",
        *sorted(p.name for p in (data_dir / "faces_aligned").glob("*.jpg"))[:3],
        "unaligned/astronaut.png",
    ]
    ids = sorted(ids)
    frame = pd.read_parquet(run_dir.table_dir)
    assert frame["image_id"].tolist() == ids
    bad = frame.set_index("image_id").loc["empty.jpg"]
    assert bad["status"] == "error" and "empty file" in bad["error"] and bad["w"] is None
    ok = frame[frame["status"] == "ok"]
    assert len(ok) == 4 and ok["error"].isna().all()
    for col in ("mse", "psnr", "ssim", "l1", "d_residual", "anomaly_score", "seconds"):
        assert np.isfinite(ok[col]).all(), col
    assert set(ok["orig_width"]) == {1024, 512} and (ok["steps"] == 1).all()
    assert ok["seed"].tolist() == [per_image_seed(3, i) for i in ok["image_id"]]
    assert ok["file_sha256"].tolist() == [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in ok["source_path"]]

    table = read_latent_table(run_dir.table_dir)
    w = table.latent("w")
    assert w.shape == (5, nvlabs_G.num_ws, nvlabs_G.w_dim) and w.dtype == np.float32
    assert np.isnan(w[ids.index("empty.jpg")]).all() and np.isfinite(w[[i != "empty.jpg" for i in ids]]).all()
    gen_sha = hashlib.sha256(fixture_generator_path.read_bytes()).hexdigest()
    meta = run_metadata(pq.read_schema(next(run_dir.table_dir.glob("*.parquet"))))
    assert meta["generator_sha256"] == gen_sha and meta["config"]["seed"] == 3 and "torch" in meta["versions"]
    import dask.dataframe as dd

    assert len(dd.read_parquet(str(run_dir.table_dir))) == 5 and pads.dataset(run_dir.table_dir).count_rows() == 5

    run = json.loads(run_dir.run_file.read_text())
    assert run["seed"] == 3 and run["generator_sha256"] == gen_sha and run["plan"]["shards"] == 3
    assert run["config"]["projection"]["steps"] == 1 and run["status"] == "complete"
    assert run_dir.success_file.exists()
    for image_id in ok["image_id"]:
        with Image.open(run_dir.reconstruction(image_id)) as im:
            assert im.size == (64, 64)

    again = project(
        ["--workers", "0", "--shard-size", "2", "--seed", "3", "--save-reconstructions"],
        fixture_generator_path,
        inp,
        out,
    )  # another cluster shape may resume the same run
    assert again.exit_code == 0, again.output
    assert json.loads(run_dir.run_file.read_text())["summary"]["images_processed"] == 0
    other = project(["--shard-size", "2", "--seed", "4", "--save-reconstructions"], fixture_generator_path, inp, out)
    assert other.exit_code == 2 and "seed: 3 -> 4" in other.output and "--overwrite" in other.output
    other_gen = _nudged_generator(fixture_generator_path, tmp_path / "other_G.pt")
    changed = project(["--shard-size", "2", "--seed", "3", "--save-reconstructions"], other_gen, inp, out)
    assert changed.exit_code == 2 and "generator.sha256" in changed.output and "--overwrite" in changed.output
    assert pd.read_parquet(run_dir.table_dir)["image_id"].tolist() == ids  # the refused runs changed nothing


def _nudged_generator(fixture: Path, dest: Path) -> Path:
    """The fixture generator with one weight changed: loads like it, has another sha256."""
    import torch

    state = torch.load(fixture, weights_only=True)
    weights = state["G_ema_state_dict"]
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = weights[name] + 0.01
    torch.save(state, dest)
    return dest


def _wait_for(predicate, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


# The interrupt test's projection: enough steps that the other shards are still running when the signal lands
# (at 2 steps the bf16 default finished all 5 shards between the first marker and the Ctrl-C), in fp32 so
# that runs with other batch layouts agree to float32 rounding (the pipeline is under test, not bf16).
INTERRUPTED = ["--steps", "12", "--set", "autocast=none"]


@pytest.mark.slow  # three runs, one a subprocess with its own cluster: ~1-3 min on 2 busy cores, per signal
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_or_killed_run_leaves_no_partial_file_and_rerun_matches_an_uninterrupted_run(
    tmp_path, data_dir, fixture_generator_path, sig
):
    """Ctrl-C: exit 130 and a clean record. kill -9 (client, nanny and worker at once): nothing to clean up
    with, yet the rerun must still see only whole parts and finish the job."""
    inp = faces(data_dir, tmp_path / "in", n_aligned=4)
    out = tmp_path / "out"
    run_dir = RunDir(out)
    cmd = [
        sys.executable,
        "-m",
        "facebatch",
        "project",
        str(inp),
        "-g",
        str(fixture_generator_path),
        "-o",
        str(out),
        *FAST,
        *INTERRUPTED,
        "--workers",
        "1",
        "--shard-size",
        "1",
    ]
    # Own session, signal to the whole group: what a terminal's Ctrl-C does (workers get it too).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    markers = run_dir.stats_dir
    try:
        assert _wait_for(lambda: markers.is_dir() and any(markers.glob("*.json")), 240), "no shard finished"
        # A run that ended on its own would fail the checks below for the wrong reason (exit 0, not 130).
        assert proc.poll() is None, "the run finished before the signal: too late to test anything"
        os.killpg(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = sorted(p.stem for p in markers.glob("*.json"))
    assert 0 < len(done) < 5, "the interrupt came too late to test anything"  # first: it explains the rest
    if sig == signal.SIGINT:
        assert proc.returncode == 130, stderr.decode()
        assert b"rerun the same command to resume" in stderr
        assert b"\x1b[" not in stdout + stderr and b"\r" not in stderr  # not a terminal: no bar, no colour codes
    else:
        assert proc.returncode == -signal.SIGKILL
    visible = sorted(p.stem for p in run_dir.table_dir.iterdir() if not p.name.startswith("."))
    for name in visible:  # every visible part is a whole Parquet file
        assert pq.read_table(run_dir.part(name)).num_rows == 1
    status = json.loads(run_dir.run_file.read_text())["status"]
    assert status == ("interrupted" if sig == signal.SIGINT else "running")  # kill -9: no chance to record it
    assert not run_dir.success_file.exists()

    resumed = project([*INTERRUPTED, "--workers", "0", "--shard-size", "1"], fixture_generator_path, inp, out)
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(run_dir.run_file.read_text())["summary"]
    assert summary["shards_skipped"] == len(done) and summary["images_processed"] == 5 - len(done)
    # an uninterrupted run with another shard and batch layout gives the same rows and latents
    ref = tmp_path / "ref"
    straight = project(
        [*INTERRUPTED, "--workers", "0", "--shard-size", "4", "--batch-size", "3"], fixture_generator_path, inp, ref
    )
    assert straight.exit_code == 0, straight.output
    a, b = read_latent_table(run_dir.table_dir), read_latent_table(RunDir(ref).table_dir)
    assert a.frame["image_id"].is_unique and a.frame["image_id"].tolist() == b.frame["image_id"].tolist()
    # equal up to the rounding of batched convolutions, which Adam's normalised steps can grow to ~1e-4
    assert np.abs(a.latent("w") - b.latent("w")).max() < 1e-3
    assert not [p for p in run_dir.table_dir.iterdir() if p.name.startswith(".")]  # stale temp files removed
    assert run_dir.success_file.exists() and json.loads(run_dir.run_file.read_text())["status"] == "complete"


def _broken_folder(root: Path) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    face = Image.fromarray(rng.integers(0, 256, (80, 60, 3), np.uint8))
    buf = io.BytesIO()
    face.save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[:300])
    (root / "zero.png").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    (root / "bomb.png").write_bytes(raw_png(30000, 30000, 1, 0, b"\x00" * 10))  # a 900-megapixel header
    face.convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(np.full((70, 50), 40000, np.uint16)).save(root / "grey16.png")
    face.convert("P").save(root / "palette.png")
    exif = face.getexif()
    exif[0x0112] = 8
    face.save(root / "rotated.jpg", exif=exif)
    return root


def test_broken_files_become_error_rows_and_retry_errors_recomputes_only_them(tmp_path, fixture_generator_path):
    inp = _broken_folder(tmp_path / "in")
    out = tmp_path / "out"
    run_dir = RunDir(out)
    res = project(["--workers", "0", "--shard-size", "3"], fixture_generator_path, inp, out)
    assert res.exit_code == 0, res.output  # bad inputs are rows, not a failed run
    frame = pd.read_parquet(run_dir.table_dir).set_index("image_id")
    errors = frame[frame["status"] == "error"]["error"].to_dict()
    assert sorted(errors) == ["bomb.png", "text.png", "truncated.jpg", "zero.png"]
    assert "decompression" in errors["bomb.png"] and "empty" in errors["zero.png"]
    assert "not an image" in errors["text.png"] and "corrupt" in errors["truncated.jpg"]
    ok = frame[frame["status"] == "ok"]
    assert sorted(ok.index) == ["cmyk.jpg", "grey16.png", "palette.png", "rotated.jpg"]
    assert ok.loc["rotated.jpg", ["orig_width", "orig_height"]].tolist() == [80, 60]  # EXIF 8 swaps the axes
    w_before = read_latent_table(run_dir.table_dir)

    Image.new("RGB", (64, 64), (120, 90, 80)).save(inp / "text.png")  # the user fixes one file
    retry = project(["--workers", "0", "--shard-size", "3", "--retry-errors"], fixture_generator_path, inp, out)
    assert retry.exit_code == 0, retry.output
    summary = json.loads(run_dir.run_file.read_text())["summary"]
    assert summary["images_retried"] == 4 and summary["images_processed"] == 4  # only error rows ran again
    after = read_latent_table(run_dir.table_dir)
    frame = after.frame.set_index("image_id")
    assert frame.loc["text.png", "status"] == "ok" and (frame["status"] == "error").sum() == 3
    keep = (w_before.frame["status"] == "ok").to_numpy()
    assert np.array_equal(after.latent("w")[keep], w_before.latent("w")[keep])  # ok rows untouched


def test_save_noise_writes_one_npz_per_shard(tmp_path, data_dir, fixture_generator_path, nvlabs_G):
    inp = faces(data_dir, tmp_path / "in", n_aligned=2)
    out = tmp_path / "out"
    res = project(
        ["--workers", "0", "--shard-size", "2", "--set", "noise_optimization=joint", "--save-noise"],
        fixture_generator_path,
        inp,
        out,
    )
    assert res.exit_code == 0, res.output
    run_dir = RunDir(out)
    assert sorted(p.name for p in run_dir.folder(NOISE).iterdir()) == ["part-00000.npz", "part-00001.npz"]
    maps = read_noise(run_dir.noise_part("part-00001"), "unaligned/astronaut.png")
    assert [m.shape for m in maps] == [(1, r, r) for r in nvlabs_G.synthesis.noise_resolutions]
    refused = project(["--workers", "0", "--save-noise"], fixture_generator_path, inp, tmp_path / "o2")
    assert refused.exit_code == 2 and "does not optimise noise" in refused.output


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, data_dir, fixture_generator_path):
    inp = faces(data_dir, tmp_path / "in", n_aligned=2)
    res = project(["--dry-run", "--shard-size", "2", "--workers", "2"], fixture_generator_path, inp, tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "3 in 2 shards of 2" in res.output and "2 worker processes" in res.output
    assert not (tmp_path / "out").exists()
    auto = project(["--dry-run"], fixture_generator_path, inp, tmp_path / "out", fast=[])
    assert auto.exit_code == 0, auto.output
    assert "auto (per worker device" in auto.output  # no --batch-size: each worker picks for its device


def test_auto_batch_size_follows_the_cpu_measurements():
    # bench/cpu_batching.py: batching pays on a CPU at 64 px, is level at 256 px and only costs memory above
    from facebatch.stages.project import auto_batch_size

    assert [auto_batch_size("cpu", r) for r in (32, 64, 128, 256, 512, 1024)] == [8, 8, 8, 4, 1, 1]
    # bench/gpu.py on an H200: a 64-px step costs the same up to batch 64; at 256 px 16 is the knee
    assert [auto_batch_size("cuda:0", r) for r in (64, 128, 256, 1024)] == [64, 64, 16, 8]


def test_quiet_prints_nothing(tmp_path, data_dir, fixture_generator_path):
    inp = faces(data_dir, tmp_path / "in", n_aligned=1)
    quiet = project(["--workers", "0", "--quiet"], fixture_generator_path, inp, tmp_path / "q")
    assert quiet.exit_code == 0 and quiet.output == ""
    assert pd.read_parquet(RunDir(tmp_path / "q").table_dir)["status"].tolist() == ["ok", "ok"]


def test_align_projects_the_aligned_face_and_a_faceless_image_is_an_error_row(
    tmp_path, data_dir, fixture_generator_path
):
    pytest.importorskip("dlib", reason="the dlib backend needs dlib-bin (the align extra)")
    inp = tmp_path / "in"
    inp.mkdir()
    os.symlink(data_dir / "faces_unaligned" / "astronaut.png", inp / "astronaut.png")
    Image.new("RGB", (120, 90), (128, 128, 128)).save(inp / "blank.png")
    res = project(["--workers", "0", "--align"], fixture_generator_path, inp, tmp_path / "out")
    assert res.exit_code == 0, res.output
    run_dir = RunDir(tmp_path / "out")
    table = read_latent_table(run_dir.table_dir)
    frame = table.frame.set_index("image_id")
    assert frame.loc["astronaut.png", "status"] == "ok" and frame.loc["blank.png", "status"] == "error"
    assert "no face" in frame.loc["blank.png", "error"]
    quad = table.latent("quad")[table.frame["image_id"].tolist().index("astronaut.png")]
    side = np.linalg.norm(quad[1] - quad[0])  # the crop is a face-sized square inside the 512-px photo
    assert 50 < side < 512 and (quad > -200).all() and (quad < 712).all()
    assert json.loads(run_dir.run_file.read_text())["config"]["align"] == "dlib"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scheduler", "tcp://127.0.0.1:1", "--scheduler-file", "x.json"], "not both"),
        (["--shard-size", "0"], "--shard-size"),
        (["--batch-size", "0"], "--batch-size"),
        (["--set", "steps"], "key=value"),
        (["--align", "--align-backend", "nope"], "unknown landmark backend"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, fixture_generator_path, args, message):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "in" / "a.png")
    res = project(args, fixture_generator_path, tmp_path / "in", tmp_path / "out")
    assert res.exit_code == 2 and message in res.output


def test_empty_folder_and_bad_generator_exit_2(tmp_path, fixture_generator_path):
    (tmp_path / "in").mkdir()
    res = project([], fixture_generator_path, tmp_path / "in", tmp_path / "out")
    assert res.exit_code == 2 and "no images" in res.output
    Image.new("RGB", (8, 8)).save(tmp_path / "in" / "a.png")
    res = project([], tmp_path / "missing.pkl", tmp_path / "in", tmp_path / "out")
    assert res.exit_code == 2 and "missing.pkl" in res.output
