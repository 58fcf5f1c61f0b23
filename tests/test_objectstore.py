"""Runs on object stores, tested against real servers on loopback ports, never a mocked client: moto's
standalone S3 server (what s3fs's own tests use), gcp-storage-emulator for gs:// and Microsoft's Azurite for
az://. Each test runs on local paths and on s3:// URLs, the store-specific ones on gs:// and az:// too: the
same commands, the same assertions.

The end-to-end chain runs on a Dask cluster whose scheduler and worker are separate processes started in
their own empty working folders, so nothing reaches OUT but through the URL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.pipeline import storage

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

# gcsfs's default filesystem first asks Google's gRPC storage-control API what kind of bucket it is, which no
# emulator serves (each call waits out a minute's timeout); the plain JSON-API filesystem is what the emulator
# answers. Set before gcsfs is imported, and inherited by the subprocesses the tests start.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
SECRET = "planted-SECRET-4f2a9c"  # moto accepts any secret; none may reach a file we write
# Azurite's one well-known development account (documented by Microsoft; it guards nothing)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
FAST = ["--steps", "1", "--set", "w_avg_samples=64", "--set", "perceptual=none", "--batch-size", "2"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """An object-store server on a loopback port: its protocol, the storage options that reach it, and what
    must never reach a file we write (its secret, its endpoint)."""

    protocol: str
    options: dict[str, str]
    proc: subprocess.Popen
    endpoint: str
    secret: str | None = None

    def filesystem(self):
        import fsspec

        # The test's own view of the bucket, never the instance (or listing cache) facebatch holds.
        return fsspec.filesystem(self.protocol, skip_instance_cache=True, **self.options)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _serve(cmd: list[str], port: int, log: Path, what: str, **env) -> subprocess.Popen:
    """Start a server in the folder of its log and wait until its port accepts connections."""
    with open(log, "wb") as out:  # the server holds its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent, env={**os.environ, **env})
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{what} did not start: " + log.read_text()[-500:])


def _start_moto(tmp: Path, **env) -> Server:
    port = _free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = _serve(cmd, port, tmp / f"moto-{port}.log", "moto server", **env)
    endpoint = f"http://127.0.0.1:{port}"
    return Server("s3", {"endpoint_url": endpoint, "key": "k", "secret": SECRET}, proc, endpoint, SECRET)


def _start_gcs(tmp: Path) -> Server:
    """fsouza-style GCS emulator in Python (gcp-storage-emulator): the JSON API that gcsfs speaks."""
    pytest.importorskip("gcsfs")
    pytest.importorskip("gcp_storage_emulator")
    port = _free_port()
    cmd = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(port)]
    proc = _serve([*cmd, "--in-memory"], port, tmp / f"gcs-{port}.log", "GCS emulator")
    endpoint = f"http://127.0.0.1:{port}"
    return Server("gs", {"endpoint_url": endpoint, "token": "anon", "project": "facebatch-test"}, proc, endpoint)


def _azurite() -> str | None:
    """Azurite (Microsoft's own Azure Storage emulator, a Node program): `make test` installs it beside the
    venv when npm is there; FACEBATCH_AZURITE names another copy."""
    for candidate in (
        os.environ.get("FACEBATCH_AZURITE"),
        str(REPO / ".test-servers" / "node_modules" / ".bin" / "azurite-blob"),
        shutil.which("azurite-blob"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _start_azurite(tmp: Path) -> Server:
    pytest.importorskip("adlfs")
    binary = _azurite()
    if binary is None:
        message = "Azurite is not installed (make test installs it with npm; or set FACEBATCH_AZURITE)"
        if os.environ.get("FACEBATCH_REQUIRE_STORES"):
            pytest.fail(message)
        pytest.skip(message)
    port = _free_port()
    cmd = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence"]
    cmd += ["--skipApiVersionCheck", "--loose", "--disableTelemetry"]
    proc = _serve(cmd, port, tmp / f"azurite-{port}.log", "Azurite")
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
    )
    return Server("az", {"connection_string": connection}, proc, endpoint, AZURITE_KEY)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    server = _start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gs_server(tmp_path_factory):
    server = _start_gcs(tmp_path_factory.mktemp("gcs"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def az_server(tmp_path_factory):
    server = _start_azurite(tmp_path_factory.mktemp("azurite"))
    yield server
    server.stop()


class Store:
    """Where a test's inputs and outputs live: a temp folder, or a fresh bucket on a server."""

    def __init__(self, tmp: Path, server: Server | None):
        self.tmp, self.server = tmp, server
        self.kind = server.protocol if server else "local"
        self.bucket = f"fb-{uuid.uuid4().hex[:10]}"
        if server:
            self.fs = server.filesystem()
            self.fs.mkdir(self.bucket)
        # On local paths the S3 options are passed too, where they must change nothing.
        options = server.options if server else {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": SECRET}
        self.options = [arg for key, value in options.items() for arg in ("--storage-option", f"{key}={value}")]

    def url(self, name: str) -> str:
        return f"{self.kind}://{self.bucket}/{name}" if self.server else str(self.tmp / name)

    def put(self, name: str, data: bytes) -> None:
        if self.server:
            self.fs.pipe_file(f"{self.bucket}/{name}", data)
        else:
            (self.tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (self.tmp / name).write_bytes(data)

    def keys(self, prefix: str) -> list[str]:
        if self.server:
            self.fs.invalidate_cache()
            found = self.fs.find(f"{self.bucket}/{prefix}")
            return sorted(key.split("/", 1)[1] for key in found)
        root = self.tmp / prefix
        return sorted(p.relative_to(self.tmp).as_posix() for p in root.rglob("*") if p.is_file())

    def get(self, name: str) -> bytes:
        return self.fs.cat_file(f"{self.bucket}/{name}") if self.server else (self.tmp / name).read_bytes()

    def run(self, *args: str):
        return runner.invoke(app, [*args, *self.options])

    def latents(self, name: str = "out"):
        """A run's latent table as this process reads it, with the store's options (a run in a subprocess
        left none here)."""
        from facebatch.pipeline.latents import read_latent_table

        storage.configure(self.options[1::2])
        return read_latent_table(storage.location(self.url(name)))


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """Local paths and s3://; a test that names ALL_STORES runs on gs:// and az:// too."""
    server = None if request.param == "local" else request.getfixturevalue(f"{request.param}_server")
    yield Store(tmp_path, server)
    storage.configure(None)  # the next test starts from fsspec's own configuration


ALL_STORES = pytest.mark.parametrize("store", ["local", "s3", "gs", "az"], indirect=True)


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


@ALL_STORES
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

    latents = store.latents()
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
        if store.server:
            assert store.server.endpoint.encode() not in body, key
            assert store.server.secret is None or store.server.secret.encode() not in body, key


def _markers(store: Store) -> list[str]:
    return [k for k in store.keys("out/_stats/") if k.endswith(".json")]  # not the atomic writer's temp files


@ALL_STORES
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
    if store.kind != "local" and sig == signal.SIGKILL:
        assert "out/.lock" in store.keys("out/")  # nobody removed it
        time.sleep(3.5)  # ... and it goes stale

    res = store.run(*args)
    assert res.exit_code == 0, res.output
    summary = json.loads(store.get("out/_run.json"))["summary"]
    assert summary["shards_skipped"] == len(done) and summary["images_processed"] == len(ids) - len(done)
    frame = store.latents().frame
    assert frame["image_id"].tolist() == ids  # none lost, none twice


def test_a_worker_killed_mid_run_is_replaced_and_no_row_is_lost_or_repeated(
    store, data_dir, fixture_generator_path, dask_cluster
):
    """kill -9 of the Dask worker process (a preempted machine) while the client runs on: its nanny starts a
    new worker, the scheduler hands the lost shard to it, and the one run ends complete, every image once."""
    from distributed import Client

    scheduler_file, _ = dask_cluster
    ids = _faces(store, data_dir, n=5)
    args = ["project", store.url("in"), "-g", str(fixture_generator_path), "-o", store.url("out")]
    args += ["--steps", "40", "--set", "w_avg_samples=64", "--set", "perceptual=none", "--shard-size", "1"]
    args += ["--scheduler-file", str(scheduler_file), "--device", "cpu"]
    with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
        (worker_pid,) = client.run(os.getpid).values()
    proc = subprocess.Popen(
        [sys.executable, "-m", "facebatch", *args, *store.options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **ONE_THREAD},
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not _markers(store) and proc.poll() is None:
            time.sleep(0.3)
        assert proc.poll() is None, "the run ended before the kill: " + proc.stderr.read().decode()[-500:]
        os.kill(worker_pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()[-2000:]
    with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
        assert worker_pid not in client.run(os.getpid).values()  # the work was finished by a new process
    record = json.loads(store.get("out/_run.json"))
    assert record["status"] == "complete" and record["summary"]["images_processed"] == len(ids)
    frame = store.latents().frame
    assert frame["image_id"].tolist() == ids  # none lost, none twice
    assert len(_markers(store)) == len(ids)


@ALL_STORES
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
    assert store.latents().frame["image_id"].tolist() == ids


@ALL_STORES
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
    if store.kind == "gs":
        # The lock is created with ifGenerationMatch=0 (gcsfs's exclusive "xb" mode), which Google's service
        # honours and gcp-storage-emulator ignores: there a second writer would overwrite, not be refused.
        pytest.skip("gcp-storage-emulator ignores ifGenerationMatch=0, the condition the lock relies on")
    fresh = {"host": "elsewhere", "pid": 7, "token": "x", "renewed_at": time.time()}
    store.put("out/.lock", json.dumps(fresh).encode())
    res = store.run(*args)
    assert res.exit_code == 2 and "in use by another facebatch run (elsewhere pid 7" in res.output
    assert store.keys("out/") == ["out/.lock"]  # nothing written
    store.put("out/.lock", json.dumps({**fresh, "renewed_at": time.time() - 3600}).encode())
    res = store.run(*args)
    assert res.exit_code == 0, res.output
    assert "out/.lock" not in store.keys("out/")


@pytest.mark.parametrize("store", ["s3", "az"], indirect=True)  # the GCS emulator ignores the exclusive create
def test_a_boundaries_update_waits_for_another_writer_of_the_file_then_merges(store, monkeypatch):
    """Two `fit-boundaries --update` on one file in a bucket: the second waits for the first's lock object
    (beside the file, not the folder's run lock) and merges into what the first wrote; a stuck writer ends
    the wait with one line."""
    import threading

    from facebatch.edit import boundaries_io
    from facebatch.edit.boundary import Boundary

    storage.configure(store.options[1::2])
    target = storage.location(store.url("runs/b.json"))

    def boundary(name: str) -> Boundary:
        return Boundary(name, "w", [0, 1], 4, np.full(8, 0.5), 0.0)

    boundaries_io.write_boundaries(target, [boundary("first")], {}, overwrite=False, update=False)
    store.put("runs/.lock", json.dumps({"host": "h", "pid": 1, "token": "run", "renewed_at": time.time()}).encode())
    held = {"host": "elsewhere", "pid": 7, "token": "x", "renewed_at": time.time()}
    store.put("runs/.b.json.lock", json.dumps(held).encode())
    release = threading.Timer(1.5, lambda: store.fs.rm_file(f"{store.bucket}/runs/.b.json.lock"))
    release.start()
    start = time.time()
    boundaries_io.write_boundaries(target, [boundary("second")], {}, overwrite=False, update=True)
    release.join()
    assert time.time() - start >= 1.5  # it waited for the other writer
    assert list(boundaries_io.load_boundaries(target)) == ["first", "second"]
    assert ".b.json.lock" not in " ".join(store.keys("runs/"))

    store.put("runs/.b.json.lock", json.dumps({**held, "renewed_at": time.time()}).encode())
    monkeypatch.setattr(boundaries_io, "LOCK_WAIT_S", 1.0)
    with pytest.raises(Exception, match="in use by another facebatch run \\(elsewhere pid 7"):
        boundaries_io.write_boundaries(target, [boundary("third")], {}, overwrite=False, update=True)
    assert list(boundaries_io.load_boundaries(target)) == ["first", "second"]


def test_missing_bucket_wrong_credentials_and_dead_endpoint_are_one_line(tmp_path, s3_server, fixture_generator_path):
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

    res = project("s3://no-such-bucket/in", s3_server.endpoint)
    assert res.exit_code == 2 and "bucket 'no-such-bucket' does not exist" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output

    strict = _start_moto(tmp_path, INITIAL_NO_AUTH_ACTION_COUNT="0")  # a server that checks credentials
    try:
        res = project("s3://some-bucket/in", strict.endpoint, secret="wrong")
    finally:
        strict.stop()
    assert res.exit_code == 2 and "s3://some-bucket/in" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1 and "wrong" not in res.output.replace("s3://some-bucket/in", "")

    start = time.time()
    res = project("s3://bucket/in", f"http://127.0.0.1:{_free_port()}")
    assert res.exit_code == 2 and "s3://bucket/in" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1 and time.time() - start < 60
    storage.configure(None)


@pytest.mark.parametrize("store", ["gs", "az"], indirect=True)
def test_a_missing_bucket_or_container_is_one_line_on_gs_and_az(store, tmp_path, fixture_generator_path):
    url = f"{store.kind}://no-such-{uuid.uuid4().hex[:8]}/in"
    args = ["project", url, "-g", str(fixture_generator_path), "-o", str(tmp_path / "out"), "--workers", "0"]
    res = store.run(*args)
    assert res.exit_code == 2 and "does not exist" in res.output and url in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_a_trainers_output_in_a_bucket_is_refused_in_one_line_and_nothing_is_written(
    tmp_path, monkeypatch, fixture_generator_path
):
    """nada and encoder train keep resumable snapshots beside their output: a URL there is refused (before any
    work) instead of becoming a local folder named "s3:"."""
    monkeypatch.chdir(tmp_path)
    gen = str(fixture_generator_path)
    for args in (
        ["encoder", "train", "-g", gen, "-o", "s3://bucket/E.safetensors", "--iters", "1"],
        ["encoder", "train", "-g", gen, "-o", "E.safetensors", "--work", "gs://bucket/work", "--iters", "1"],
        ["nada", "-g", gen, "--source", "photo", "--target", "sketch", "-o", "az://box/G.safetensors"],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "needs a local path" in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []


def test_sefa_directions_write_to_a_url(fixture_generator_path):
    import fsspec

    url = f"memory://sefa-{uuid.uuid4().hex[:8]}/directions.json"
    res = runner.invoke(app, ["directions", "sefa", "-g", str(fixture_generator_path), "-o", url, "-k", "2"])
    assert res.exit_code == 0, res.output
    written = json.loads(fsspec.open(url, "rb").open().read())
    assert len(written["boundaries"]) == 2


@pytest.mark.slow  # the clients' own retries: about 70 s (gcsfs) and 170 s (Azure SDK) before they give up
@pytest.mark.parametrize("kind", ["gs", "az"])
def test_a_dead_gs_or_az_endpoint_is_one_line_without_the_clients_tracebacks(kind, tmp_path, fixture_generator_path):
    pytest.importorskip({"gs": "gcsfs", "az": "adlfs"}[kind])
    endpoint = f"http://127.0.0.1:{_free_port()}"
    options = {
        "gs": [f"endpoint_url={endpoint}", "token=anon", "project=p"],
        "az": [
            f"connection_string=DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
        ],
    }[kind]
    args = ["project", f"{kind}://bucket/in", "-g", str(fixture_generator_path), "-o", str(tmp_path / "out")]
    res = runner.invoke(app, [*args, "--workers", "0", *[a for o in options for a in ("--storage-option", o)]])
    assert res.exit_code == 2 and f"{kind}://bucket/in" in res.output and "did not answer" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output and "Warning" not in res.output


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
    s3_server, tmp_path, data_dir, monkeypatch, dask_cluster
):
    """--generator and --encoder as s3:// URLs: the client and the worker (its own folder, its own model cache)
    each fetch their copy, the run records the URL for workers to load, and the latents are bit for bit those
    of the same run from local files."""
    from facebatch.nets import registry

    scheduler_file, worker_dir = dask_cluster
    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path / "client-cache"))
    store = Store(tmp_path, s3_server)
    local = Store(tmp_path / "local", None)
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
    remote, disk = store.latents(), local.latents()
    assert remote.frame["image_id"].tolist() == disk.frame["image_id"].tolist()
    assert np.array_equal(remote.latent("w"), disk.latent("w"), equal_nan=True)
    storage.configure(None)


def test_a_checkpoint_url_that_is_missing_is_one_line(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path / "cache"))
    store = Store(tmp_path, s3_server)
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


@pytest.mark.parametrize("store", ["s3", "gs", "az"], indirect=True)
def test_prefetched_images_are_the_bytes_a_lone_read_gives(store, data_dir, monkeypatch):
    """A batch's images are fetched together; an object too big, empty or missing is left to the lone read,
    which says what is wrong, and a prefetched one decodes to the same tensor."""
    import torch

    from facebatch.pipeline import images

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
