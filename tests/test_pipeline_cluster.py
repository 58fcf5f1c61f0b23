"""Local cluster sizing: one worker per visible GPU, else a CPU split that leaves torch several threads."""

from __future__ import annotations

import pytest

from facebatch.errors import InputError
from facebatch.pipeline import cluster as cluster_module
from facebatch.pipeline.cluster import ClusterOptions, describe, local_layout


@pytest.fixture
def machine(monkeypatch):
    """Pretend to be a host with `cores` CPU cores and `gpus` CUDA devices."""

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    def set_machine(cores: int, gpus: int, visible: str | None = None):
        monkeypatch.setattr(cluster_module, "usable_cores", lambda: cores)
        monkeypatch.setattr(cluster_module, "cuda_device_count", lambda: gpus)
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)

    return set_machine


def test_one_worker_per_gpu_each_seeing_only_its_own(machine):
    machine(cores=16, gpus=2)
    assert local_layout(ClusterOptions()) == (2, 8, ["0", "1"])
    machine(cores=16, gpus=2, visible="3,5")  # respects a CUDA_VISIBLE_DEVICES the user already set
    assert local_layout(ClusterOptions(device="cuda")) == (2, 8, ["3", "5"])
    assert local_layout(ClusterOptions(device="cuda:1")) == (1, 16, ["1"])
    assert "GPUs 3,5" in describe(ClusterOptions())


def test_cpu_hosts_get_a_quarter_of_the_cores_as_workers(machine):
    machine(cores=16, gpus=0)
    assert not ClusterOptions().in_process
    assert local_layout(ClusterOptions()) == (4, 4, [None] * 4)
    assert local_layout(ClusterOptions(workers=3, threads_per_worker=2)) == (3, 2, [None] * 3)
    assert ClusterOptions(threads_per_worker=1).local_workers() == 16  # single-threaded work (align): one per core
    machine(cores=16, gpus=2)
    assert local_layout(ClusterOptions(device="cpu"))[0] == 4  # --device cpu ignores the GPUs


@pytest.mark.parametrize("cores", [1, 2, 4, 7])
def test_small_cpu_hosts_run_in_this_process_with_every_usable_core(machine, cores):
    """bench/workers.py: on 1-2 cores the local cluster was 1.3-2x slower than this process; its start costs 6-7 s."""
    machine(cores=cores, gpus=0)
    opts = ClusterOptions()
    assert opts.in_process and opts.torch_threads() == cores
    assert describe(opts).startswith("this process (no Dask)")
    assert not ClusterOptions(workers=1).in_process  # asked for: a cluster of one


def test_threads_times_workers_stay_within_affinity_and_omp_num_threads(machine, monkeypatch):
    machine(cores=32, gpus=0)
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # the budget is the lower of the two
    assert local_layout(ClusterOptions()) == (2, 4, [None] * 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert ClusterOptions().in_process and ClusterOptions().torch_threads() == 2
    for workers in (1, 2, 3, 5):
        got_workers, threads, _ = local_layout(ClusterOptions(workers=workers))
        assert got_workers * threads <= max(2, workers)  # one thread each at the least
    monkeypatch.setenv("OMP_NUM_THREADS", "not-a-number")  # ignored, not a crash
    assert ClusterOptions().local_workers() == 8
    machine(cores=2, gpus=0)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert "oversubscribed" in describe(ClusterOptions(workers=2, threads_per_worker=2))


def test_cuda_without_a_gpu_and_conflicting_options_are_refused(machine, tmp_path):
    machine(cores=8, gpus=0)
    with pytest.raises(InputError, match="no CUDA device"):
        ClusterOptions(device="cuda").validate()
    with pytest.raises(InputError, match="cannot be combined"):
        ClusterOptions(workers=2, scheduler="tcp://h:8786").validate()
    with pytest.raises(InputError, match="does not exist"):
        ClusterOptions(scheduler_file=tmp_path / "missing.json").validate()
    assert ClusterOptions(workers=0).in_process and describe(ClusterOptions(workers=0)).startswith("this process")


def test_a_local_gpu_worker_sees_its_one_gpu_as_plain_cuda(monkeypatch):
    """--device cuda:1 pins a local worker to GPU 1 with CUDA_VISIBLE_DEVICES, where it is cuda (ordinal 0):
    the device must be resolved inside the worker, not by the client (which has no FACEBATCH_WORKER_GPU)."""
    from facebatch.pipeline import shard_task

    seen = []
    monkeypatch.setattr(shard_task, "_STATE", {})
    monkeypatch.setenv("FACEBATCH_WORKER_GPU", "1")
    shard_task.worker_state(lambda cfg: seen.append(cfg["device"]), "k1", {"device": "cuda:1"})
    monkeypatch.delenv("FACEBATCH_WORKER_GPU")
    shard_task.worker_state(lambda cfg: seen.append(cfg["device"]), "k2", {"device": "cuda:1"})  # e.g. a remote worker
    assert seen == ["cuda", "cuda:1"]


def _stamp(state, items, info):
    """A shard that holds its worker for a moment and says when (no torch, no device)."""
    import time

    import pyarrow as pa

    start = time.monotonic()
    time.sleep(0.2)
    n = len(items)
    return pa.table(
        {
            "image_id": [i["image_id"] for i in items],
            "status": ["ok"] * n,
            "error": pa.array([None] * n, pa.string()),
            "start": [start] * n,
            "end": [time.monotonic()] * n,
        }
    )


def _config(config):
    return config


@pytest.fixture
def mixed_cluster():
    """A scheduler with one worker that declares a GPU (2 threads) and one that does not, in this process."""
    from distributed import Scheduler, SpecCluster, Worker

    workers = {
        "gpu": {"cls": Worker, "options": {"nthreads": 2, "resources": {"GPU": 1}}},
        "cpu": {"cls": Worker, "options": {"nthreads": 2}},
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard": False, "dashboard_address": ":0"}}
    with SpecCluster(workers=workers, scheduler=scheduler, silence_logs=40) as cluster:
        cluster.wait_for_workers(2)
        info = cluster.scheduler_info["workers"]
        gpu = next(a for a, w in info.items() if w.get("resources", {}).get("GPU"))
        yield cluster.scheduler_address, gpu


def _run(tmp_path, address, device):
    import json

    from facebatch.pipeline.rundir import LATENTS, RunDir
    from facebatch.pipeline.runner import StageSpec, run_stage

    spec = StageSpec(
        name="stamp",
        out_dir=tmp_path / device,
        table=LATENTS,
        items=[{"image_id": f"i{k}"} for k in range(8)],
        shard_size=1,
        config={},
        setup=_config,
        process=_stamp,
    )
    summary = run_stage(spec, ClusterOptions(scheduler=address, device=device), progress=False)
    assert summary.complete
    run_dir = RunDir(spec.out_dir)
    markers = [json.loads(p.read_text()) for p in sorted(run_dir.stats_dir.glob("*.json"))]
    import pandas as pd

    return markers, pd.read_parquet(run_dir.table_dir).sort_values("start")


def test_gpu_tasks_go_only_to_gpu_workers_and_one_at_a_time(mixed_cluster, tmp_path, monkeypatch):
    from facebatch.pipeline import shard_task

    monkeypatch.setattr(shard_task, "_device_of", lambda config: config["device"])  # workers here have no CUDA
    address, gpu_worker = mixed_cluster
    markers, frame = _run(tmp_path, address, "cuda")
    assert {m["worker"] for m in markers} == {gpu_worker}  # the CPU-only worker got no shard
    starts, ends = frame.start.to_numpy(), frame.end.to_numpy()
    assert (starts[1:] >= ends[:-1]).all()  # two threads, one GPU: never two shards at once
    markers, _ = _run(tmp_path, address, "cpu")  # a CPU run asks for no GPU: both workers take shards
    assert len({m["worker"] for m in markers}) == 2


def test_cuda_on_a_cluster_without_gpu_workers_is_refused_not_left_waiting(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with pytest.raises(InputError, match="declares a GPU resource"):
            _run(tmp_path, cluster.scheduler_address, "cuda")
