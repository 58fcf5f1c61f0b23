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
