"""Runs on an object store, tested against a real S3 server: moto's standalone server (what s3fs's own tests
use) on a loopback port, never a mocked client. Each test runs once on local paths and once on s3:// URLs:
the same commands, the same assertions.

The end-to-end chain runs on a Dask cluster whose scheduler and worker are separate processes started in
their own empty working folders, so nothing reaches OUT but through the URL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.pipeline import storage

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

runner = CliRunner()
SECRET = "planted-SECRET-4f2a9c"  # moto accepts any secret; none may reach a file we write
FAST = ["--steps", "1", "--set", "w_avg_samples=64", "--set", "perceptual=none", "--batch-size", "2"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_moto(tmp: Path, **env) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = open(tmp / f"moto-{port}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start")


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    proc, endpoint = _start_moto(tmp_path_factory.mktemp("moto"))
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


def _client(endpoint: str):
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key=SECRET, region_name="us-east-1"
    )


class Store:
    """Where a test's inputs and outputs live: a temp folder, or a fresh bucket on the moto server."""

    def __init__(self, kind: str, tmp: Path, endpoint: str | None):
        self.kind, self.tmp, self.endpoint = kind, tmp, endpoint
        self.bucket = f"fb-{uuid.uuid4().hex[:10]}"
        if kind == "s3":
            _client(endpoint).create_bucket(Bucket=self.bucket)
        # Passed on local paths too, where they must change nothing.
        self.options = [
            "--storage-option",
            f"endpoint_url={endpoint or 'http://127.0.0.1:9'}",
            "--storage-option",
            "key=k",
            "--storage-option",
            f"secret={SECRET}",
        ]

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}" if self.kind == "s3" else str(self.tmp / name)

    def put(self, name: str, data: bytes) -> None:
        if self.kind == "s3":
            _client(self.endpoint).put_object(Bucket=self.bucket, Key=name, Body=data)
        else:
            (self.tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (self.tmp / name).write_bytes(data)

    def keys(self, prefix: str) -> list[str]:
        if self.kind == "s3":
            pages = _client(self.endpoint).get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
        root = self.tmp / prefix
        return sorted(p.relative_to(self.tmp).as_posix() for p in root.rglob("*") if p.is_file())

    def get(self, name: str) -> bytes:
        if self.kind == "s3":
            return _client(self.endpoint).get_object(Bucket=self.bucket, Key=name)["Body"].read()
        return (self.tmp / name).read_bytes()

    def run(self, *args: str):
        return runner.invoke(app, [*args, *self.options])


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    endpoint = request.getfixturevalue("s3_endpoint") if request.param == "s3" else None
    yield Store(request.param, tmp_path, endpoint)
    storage.configure(None)  # the next test starts from fsspec's own configuration


def _faces(store: Store, data_dir: Path, n: int = 6) -> list[str]:
    names = sorted((data_dir / "faces_aligned").glob("*.jpg"))[:n]
    for src in names:
        store.put(f"in/{src.name}", src.read_bytes())
    store.put("in/broken.jpg", b"not a jpeg")
    return sorted([p.name for p in names] + ["broken.jpg"])


@pytest.fixture
def dask_cluster(tmp_path):
    """A scheduler and one worker, each a process in its own empty folder (they share no OUT folder)."""
    sched_dir, worker_dir = tmp_path / "scheduler-cwd", tmp_path / "worker-cwd"
    sched_dir.mkdir()
    worker_dir.mkdir()
    file = tmp_path / "scheduler.json"
    env = {**os.environ, **ONE_THREAD, "FACEBATCH_CACHE_DIR": str(worker_dir / "cache")}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(file),
            ],
            cwd=sched_dir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    deadline = time.time() + 60
    while not file.exists() and time.time() < deadline:
        time.sleep(0.2)
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                "--scheduler-file",
                str(file),
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--no-dashboard",
                "--local-directory",
                str(worker_dir),
            ],
            cwd=worker_dir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    from distributed import Client

    with Client(scheduler_file=str(file), timeout=60) as client:
        client.wait_for_workers(1, timeout=90)
    yield file, worker_dir
    for proc in procs[::-1]:
        proc.terminate()
        proc.wait(timeout=20)


def test_project_score_label_fit_augment_end_to_end(store, data_dir, fixture_generator_path, dask_cluster):
    scheduler_file, worker_dir = dask_cluster
    ids = _faces(store, data_dir)
    gen = str(fixture_generator_path)
    cluster = ["--scheduler-file", str(scheduler_file), "--device", "cpu", "--threads-per-worker", "1"]
    steps = [*FAST, "--steps", "30"]  # enough for latents that differ, so the SVM has a direction to find

    res = store.run(
        "project",
        store.url("in"),
        "-g",
        gen,
        "-o",
        store.url("out"),
        *steps,
        "--shard-size",
        "3",
        "--save-reconstructions",
        *cluster,
    )
    assert res.exit_code == 0, res.output
    keys = store.keys("out/")
    assert [k for k in keys if k.startswith("out/latents/")] == [f"out/latents/part-0000{i}.parquet" for i in range(3)]
    assert [k for k in keys if k.startswith("out/_stats/")] == [
        f"out/_stats/latents/part-0000{i}.json" for i in range(3)
    ]
    assert "out/_SUCCESS" in keys
    assert store.kind == "local" or "out/.lock" not in keys  # the lock object is gone once the run ends
    assert sum(k.startswith("out/reconstructions/") for k in keys) == len(ids) - 1
    assert list(worker_dir.rglob("*.parquet")) == []  # the worker wrote nothing into its own folder

    table = storage.location(store.url("out"))
    from facebatch.pipeline.latents import read_latent_table

    latents = read_latent_table(table)
    assert latents.frame["image_id"].tolist() == ids  # every row once, in order
    assert latents.frame.set_index("image_id").loc["broken.jpg", "status"] == "error"
    assert latents.latent("w").shape[1:] == (10, 512)  # the fixture generator: 10 ws of 512

    again = store.run(
        "project",
        store.url("in"),
        "-g",
        gen,
        "-o",
        store.url("out"),
        *steps,
        "--shard-size",
        "3",
        "--save-reconstructions",
        "--workers",
        "0",
    )
    assert again.exit_code == 0, again.output
    assert json.loads(store.get("out/_run.json"))["summary"]["images_processed"] == 0  # resumed: all done

    res = store.run("score", store.url("out"), "--score", "mse", "--threshold", "0.1")
    assert res.exit_code == 0, res.output
    metrics = json.loads(store.get("out/report/metrics.json"))
    assert metrics["rows"]["ok"] == len(ids) - 1
    assert any(k.startswith("out/flags/part-") for k in store.keys("out/flags/"))
    assert "out/report/report.html" in store.keys("out/report/")

    res = store.run("label", store.url("out"), "--from", "source", "-o", store.url("labels.csv"), "--workers", "0")
    assert res.exit_code == 0, res.output
    labels = pd.read_csv(__import__("io").BytesIO(store.get("labels.csv")))
    assert sorted(labels["image_id"]) == ids and labels.set_index("image_id").loc["broken.jpg"].isna().all()

    res = store.run(
        "fit-boundaries",
        store.url("labels.csv"),
        "-l",
        store.url("out"),
        "-o",
        store.url("b.json"),
        "-a",
        "Male",
        "--chosen-ratio",
        "0.5",
        "--skip-unknown",
    )
    assert res.exit_code == 0, res.output
    assert list(json.loads(store.get("b.json"))["boundaries"]) == ["Male"]

    res = store.run(
        "augment",
        "--attr",
        "Male",
        "-l",
        store.url("out"),
        "-B",
        store.url("b.json"),
        "-o",
        store.url("aug"),
        "--strengths",
        "-2,2",
        "--workers",
        "0",
    )
    assert res.exit_code == 0, res.output
    manifest = [k for k in store.keys("aug/") if k.startswith("aug/manifest/part-")]
    pngs = [k for k in store.keys("aug/images/") if k.endswith(".png")]
    assert manifest and len(pngs) == 2 * (len(ids) - 1)
    assert any(k.startswith("aug/contact_sheets/") for k in store.keys("aug/"))

    for key in store.keys(""):  # no written file holds the secret or the endpoint
        body = store.get(key)
        assert SECRET.encode() not in body, key
        if store.endpoint:
            assert store.endpoint.encode() not in body, key


def _markers(store: Store) -> list[str]:
    return [k for k in store.keys("out/_stats/") if k.endswith(".json")]  # not the atomic writer's temp files


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_run_resumes_with_no_row_lost_or_repeated(
    store, data_dir, fixture_generator_path, sig, monkeypatch
):
    """Ctrl-C, or kill -9 of the client with its in-process worker (its lock object is left behind and goes
    stale): the rerun redoes only the missing shards, and every image is there exactly once."""
    ids = _faces(store, data_dir, n=5)
    args = [
        "project",
        store.url("in"),
        "-g",
        str(fixture_generator_path),
        "-o",
        store.url("out"),
        "--steps",
        "40",
        "--set",
        "w_avg_samples=64",
        "--set",
        "perceptual=none",
        "--shard-size",
        "1",
        "--workers",
        "0",
    ]
    monkeypatch.setenv("FACEBATCH_LOCK_STALE_S", "3")  # the subprocess and the rerun in this process
    cmd = [sys.executable, "-m", "facebatch", *args, *store.options]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env={**os.environ, **ONE_THREAD}
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not _markers(store) and proc.poll() is None:
            time.sleep(0.3)
        assert proc.poll() is None, "the run ended before the signal: " + proc.stderr.read().decode()[-500:]
        os.killpg(proc.pid, sig)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = _markers(store)
    assert 0 < len(done) < len(ids)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
    if store.kind == "s3" and sig == signal.SIGKILL:
        assert "out/.lock" in store.keys("out/")  # nobody removed it
        time.sleep(3.5)  # ... and it goes stale

    res = store.run(*args)
    assert res.exit_code == 0, res.output
    summary = json.loads(store.get("out/_run.json"))["summary"]
    assert summary["shards_skipped"] == len(done) and summary["images_processed"] == len(ids) - len(done)
    from facebatch.pipeline.latents import read_latent_table

    frame = read_latent_table(storage.location(store.url("out"))).frame
    assert frame["image_id"].tolist() == ids  # none lost, none twice


def test_damaged_part_is_redone_and_overwrite_keeps_what_a_user_put_in_out(store, data_dir, fixture_generator_path):
    ids = _faces(store, data_dir, n=3)
    args = [
        "project",
        store.url("in"),
        "-g",
        str(fixture_generator_path),
        "-o",
        store.url("out"),
        *FAST,
        "--shard-size",
        "2",
        "--workers",
        "0",
    ]
    assert store.run(*args).exit_code == 0
    store.put("out/latents/part-00001.parquet", store.get("out/latents/part-00001.parquet")[:-20])  # truncated
    store.put("out/notes.txt", b"mine")
    res = store.run(*args)
    assert res.exit_code == 0, res.output
    summary = json.loads(store.get("out/_run.json"))["summary"]
    assert summary["shards_skipped"] == 1 and summary["images_processed"] == 2
    res = store.run(*args, "--overwrite")
    assert res.exit_code == 0, res.output
    assert store.get("out/notes.txt") == b"mine"  # --overwrite removed only what facebatch wrote
    from facebatch.pipeline.latents import read_latent_table

    assert read_latent_table(storage.location(store.url("out"))).frame["image_id"].tolist() == ids


def test_a_second_run_on_a_busy_out_is_refused_and_a_stale_lock_is_taken_over(store, data_dir, fixture_generator_path):
    _faces(store, data_dir, n=1)
    args = [
        "project",
        store.url("in"),
        "-g",
        str(fixture_generator_path),
        "-o",
        store.url("out"),
        *FAST,
        "--workers",
        "0",
    ]
    if store.kind == "local":
        pytest.skip("the local lock is an fcntl lock, tested in test_pipeline_rundir_paths")
    fresh = {"host": "elsewhere", "pid": 7, "token": "x", "renewed_at": time.time()}
    store.put("out/.lock", json.dumps(fresh).encode())
    res = store.run(*args)
    assert res.exit_code == 2 and "in use by another facebatch run (elsewhere pid 7" in res.output
    assert store.keys("out/") == ["out/.lock"]  # nothing written
    store.put("out/.lock", json.dumps({**fresh, "renewed_at": time.time() - 3600}).encode())
    res = store.run(*args)
    assert res.exit_code == 0, res.output
    assert "out/.lock" not in store.keys("out/")


def test_missing_bucket_wrong_credentials_and_dead_endpoint_are_one_line(tmp_path, s3_endpoint, fixture_generator_path):
    gen = str(fixture_generator_path)

    def project(url: str, endpoint: str, secret: str = SECRET):
        return runner.invoke(
            app,
            [
                "project",
                url,
                "-g",
                gen,
                "-o",
                str(tmp_path / "out"),
                "--workers",
                "0",
                "--storage-option",
                f"endpoint_url={endpoint}",
                "--storage-option",
                "key=k",
                "--storage-option",
                f"secret={secret}",
                "--storage-option",
                "retries=1",
            ],
        )

    res = project("s3://no-such-bucket/in", s3_endpoint)
    assert res.exit_code == 2 and "bucket 'no-such-bucket' does not exist" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output

    proc, strict = _start_moto(tmp_path, INITIAL_NO_AUTH_ACTION_COUNT="0")  # a server that checks credentials
    try:
        res = project("s3://some-bucket/in", strict, secret="wrong")
    finally:
        proc.terminate()
    assert res.exit_code == 2 and "s3://some-bucket/in" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1 and "wrong" not in res.output.replace("s3://some-bucket/in", "")

    start = time.time()
    res = project("s3://bucket/in", f"http://127.0.0.1:{_free_port()}")
    assert res.exit_code == 2 and "s3://bucket/in" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1 and time.time() - start < 60
    storage.configure(None)


def test_storage_options_parse_into_fsspec_keywords():
    assert storage.parse_options(["endpoint_url=http://h:9000", "anon=true", "client_kwargs.region_name=eu"]) == {
        "endpoint_url": "http://h:9000",
        "anon": True,
        "client_kwargs": {"region_name": "eu"},
    }
    for bad in ["novalue", "=x", "a..b=1"]:
        with pytest.raises(Exception, match="KEY=VALUE"):
            storage.parse_options([bad])
    assert storage.location("file:///tmp/x") == Path("/tmp/x") and not storage.is_url("/tmp/x")
    assert storage.is_url("s3://b/k") and storage.is_url("memory://x")
    with pytest.raises(Exception, match="unknown protocol nosuch://"):
        storage.location("nosuch://x/y")


def test_latents_read_back_identical_from_memory_store(tmp_path, data_dir, fixture_generator_path):
    """memory:// (fsspec's in-process store): the same run as on disk, row for row and bit for bit."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for src in sorted((data_dir / "faces_aligned").glob("*.jpg"))[:2]:
        fs.pipe(f"/in-{uuid.uuid4().hex[:6]}/{src.name}", src.read_bytes())
    root = next(p for p in fs.ls("/", detail=False) if "/in-" in p)
    for dest in ("memory://" + root.strip("/").replace("in-", "out-"), str(tmp_path / "out")):
        args = [
            "project",
            "memory://" + root.strip("/"),
            "-g",
            str(fixture_generator_path),
            "-o",
            dest,
            *FAST,
            "--workers",
            "0",
        ]
        assert runner.invoke(app, args).exit_code == 0
    from facebatch.pipeline.latents import read_latent_table

    mem = read_latent_table(storage.location("memory://" + root.strip("/").replace("in-", "out-")))
    disk = read_latent_table(tmp_path / "out")
    assert mem.frame["image_id"].tolist() == disk.frame["image_id"].tolist()
    assert np.array_equal(mem.latent("w"), disk.latent("w"))


def test_generator_and_encoder_read_from_the_bucket_by_each_worker(
    s3_endpoint, tmp_path, data_dir, monkeypatch, dask_cluster
):
    """--generator and --encoder as s3:// URLs: the client and the worker (its own folder, its own model cache)
    each fetch their copy, the run records the URL for workers to load, and the latents are bit for bit those
    of the same run from local files."""
    from facebatch.nets import registry

    scheduler_file, worker_dir = dask_cluster
    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path / "client-cache"))
    store = Store("s3", tmp_path, s3_endpoint)
    local = Store("local", tmp_path / "local", None)
    gen, enc = registry.get("celeba64").fetch(), registry.get("celeba64-encoder").fetch()
    for where in (store, local):
        _faces(where, data_dir, n=3)
        where.put("models/G.safetensors", gen.read_bytes())
        where.put("models/E.safetensors", enc.read_bytes())
    cluster = ["--scheduler-file", str(scheduler_file), "--device", "cpu", "--threads-per-worker", "1"]
    for where in (store, local):
        res = where.run(
            "project",
            where.url("in"),
            "-g",
            where.url("models/G.safetensors"),
            "--encoder",
            where.url("models/E.safetensors"),
            "--preset",
            "encoder",
            "-o",
            where.url("out"),
            *cluster,
        )
        assert res.exit_code == 0, res.output
    runtime = json.loads(store.get("out/_run.json"))["runtime"]
    assert runtime["generator_path"] == store.url("models/G.safetensors")
    assert runtime["encoder_path"] == store.url("models/E.safetensors")
    fetched = sorted(p.name for p in (worker_dir / "cache" / "downloads").glob("*.safetensors"))
    assert sorted(name.split("-", 1)[1] for name in fetched) == ["E.safetensors", "G.safetensors"]  # key-name
    from facebatch.pipeline.latents import read_latent_table

    storage.configure(store.options[1::2])  # the last command (on local paths) left no s3 options behind
    remote, disk = read_latent_table(storage.location(store.url("out"))), read_latent_table(local.tmp / "out")
    assert remote.frame["image_id"].tolist() == disk.frame["image_id"].tolist()
    assert np.array_equal(remote.latent("w"), disk.latent("w"), equal_nan=True)
    storage.configure(None)


def test_a_checkpoint_url_that_is_missing_is_one_line(s3_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path / "cache"))
    store = Store("s3", tmp_path, s3_endpoint)
    store.put("in/a.jpg", b"x")
    res = store.run(
        "project",
        store.url("in"),
        "-g",
        store.url("models/nothing.safetensors"),
        "-o",
        store.url("out"),
        "--workers",
        "0",
    )
    assert res.exit_code == 2 and "models/nothing.safetensors" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    storage.configure(None)


def test_prefetched_images_are_the_bytes_a_lone_read_gives(s3_endpoint, tmp_path, data_dir, monkeypatch):
    """A batch's images are fetched together; an object too big, empty or missing is left to the lone read,
    which says what is wrong, and a prefetched one decodes to the same tensor."""
    import torch

    from facebatch.pipeline import images

    store = Store("s3", tmp_path, s3_endpoint)
    names = _faces(store, data_dir, n=3)
    store.put("in/sub/empty.png", b"")
    storage.configure(store.options[1::2])
    urls = [store.url(f"in/{n}") for n in names] + [store.url("in/sub/empty.png"), store.url("in/gone.jpg")]
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", max(len(store.get(f"in/{n}")) for n in names) - 1)
    got = images.prefetch(urls)
    biggest = max(names, key=lambda n: len(store.get(f"in/{n}")))
    assert set(got) == {store.url(f"in/{n}") for n in names if n != biggest}
    monkeypatch.undo()
    for url, data in got.items():
        assert data == store.get(url.split("/", 3)[3])
        if not url.endswith("broken.jpg"):
            assert data == images.read_bytes(url)
            assert torch.equal(images.load_image(url, 64, data=data)[0], images.load_image(url, 64)[0])
    with pytest.raises(images.UnreadableImage, match="not an image"):
        images.load_image(store.url("in/broken.jpg"), 64, data=got.get(store.url("in/broken.jpg"), b"not a jpeg"))
    storage.configure(None)
