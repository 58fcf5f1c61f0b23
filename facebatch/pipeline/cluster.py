"""Where shards run: a local Dask cluster sized for torch, or an existing cluster by address/scheduler file.

Dask's nanny exports OMP_NUM_THREADS=1 to every worker (``distributed.nanny.pre-spawn-environ``), which
would leave torch on one core per worker; the local cluster therefore sets the thread variables itself.
With CUDA, each local worker sees exactly one GPU through CUDA_VISIBLE_DEVICES, as dask-cuda does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from facebatch.errors import InputError, first_line

CONNECT_TIMEOUT_S = 30
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# The default layout on CPUs, chosen by bench/workers.py: with 1-2 cores a local cluster was 1.3-1.4x slower
# than running in this process (idle machine) and 1.96x slower as one single-threaded worker per core; its
# start alone costs 6-7 s. Below this many usable cores the default is therefore this process; from it up,
# processes of THREADS_PER_CPU_WORKER torch threads each (not measured on such a machine here).
LOCAL_CLUSTER_MIN_CORES = 8
THREADS_PER_CPU_WORKER = 4


@dataclass
class ClusterOptions:
    workers: int | None = None  # local worker processes (None: default_workers); 0 = in this process
    scheduler: str | None = None  # address of a running scheduler, e.g. tcp://host:8786
    scheduler_file: Path | None = None
    threads_per_worker: int | None = None  # torch threads per worker (None: thread_budget() / workers)
    device: str = "auto"  # auto | cpu | cuda | cuda:N: what local workers are built for
    processes: bool = True  # False: workers are threads of this process (fast start, for tests)
    memory_limit: str | None = "auto"  # per local worker, Dask's syntax

    def validate(self) -> None:
        if self.scheduler and self.scheduler_file:
            raise InputError("give --scheduler or --scheduler-file, not both")
        if self.workers is not None and self.workers < 0:
            raise InputError("--workers must be 0 or more")
        if self.workers is not None and (self.scheduler or self.scheduler_file):
            raise InputError("--workers sizes a local cluster; it cannot be combined with --scheduler/--scheduler-file")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise InputError("--threads-per-worker must be at least 1")
        if self.scheduler_file is not None and not Path(self.scheduler_file).is_file():
            raise InputError(f"--scheduler-file {self.scheduler_file} does not exist")
        if not self.remote and not self.in_process:
            local_layout(self)  # e.g. --device cuda on a host without a GPU: refuse before anything is written

    @property
    def remote(self) -> bool:
        return bool(self.scheduler or self.scheduler_file)

    @property
    def in_process(self) -> bool:
        return not self.remote and self.local_workers() == 0

    def local_workers(self) -> int:
        """Local worker processes this run gets: the explicit --workers, else the default rule."""
        if self.workers is not None:
            return self.workers
        return default_workers(self.device, self.threads_per_worker or THREADS_PER_CPU_WORKER)

    def torch_threads(self) -> int | None:
        """Torch threads per worker (or in this process); None on a remote cluster, whose workers decide."""
        if self.threads_per_worker is not None:
            return self.threads_per_worker
        if self.remote:
            return None
        return local_layout(self)[1] if not self.in_process else thread_budget()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_budget() -> int:
    """The threads this process may keep busy: its CPU affinity, lowered by OMP_NUM_THREADS when that is set."""
    cores = usable_cores()
    try:
        asked = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        asked = 0
    return min(cores, asked) if asked > 0 else cores


def default_workers(device: str = "auto", threads_each: int = THREADS_PER_CPU_WORKER) -> int:
    """One rule for every command: one worker per visible GPU; on CPUs, this process (0) below
    LOCAL_CLUSTER_MIN_CORES usable cores, else one process per `threads_each` of them."""
    if wants_cuda(device):
        return max(len(_visible_gpus(device)), 1)
    budget = thread_budget()
    return 0 if budget < LOCAL_CLUSTER_MIN_CORES else max(1, budget // threads_each)


def cuda_device_count() -> int:
    """GPUs torch can see here; 0 without torch or CUDA (the runner itself does not need torch)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def wants_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and cuda_device_count() > 0)


def _visible_gpus(device: str) -> list[str]:
    count = cuda_device_count()
    if count == 0:
        raise InputError(f"--device {device} was asked for but no CUDA device is visible")
    if ":" in device:
        return [device.split(":", 1)[1]]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [d for d in env.split(",") if d.strip()] if env else [str(i) for i in range(count)]


def local_layout(opts: ClusterOptions) -> tuple[int, int, list[str | None]]:
    """(workers, torch threads each, CUDA_VISIBLE_DEVICES per worker or None) for a local cluster.

    Threads x workers stay within thread_budget() unless --workers / --threads-per-worker ask for more."""
    budget = thread_budget()
    gpus: list[str | None]
    if wants_cuda(opts.device):
        visible = _visible_gpus(opts.device)
        workers = opts.workers or len(visible)
        gpus = [visible[i % len(visible)] for i in range(workers)]
    else:
        workers = opts.workers or max(1, budget // (opts.threads_per_worker or THREADS_PER_CPU_WORKER))
        gpus = [None] * workers
    threads = opts.threads_per_worker or max(1, budget // workers)
    return workers, threads, gpus


GPU_RESOURCE = "GPU"


def task_resources(client, opts: ClusterOptions) -> dict[str, int] | None:
    """The Dask resources each shard task asks for: one GPU when the run is for CUDA, so workers without
    a GPU never receive a shard, and a GPU worker runs one shard at a time whatever its thread count.

    A worker has a GPU for Dask when it declares the resource (``dask worker ... --resources GPU=1``, or
    ``dask cuda worker ... --resources GPU=1``: one worker process per GPU); the local CUDA cluster declares
    it for each of its workers. `--device cuda` on a cluster where no worker declares it is refused here,
    instead of leaving the tasks waiting forever; `--device auto` asks for the GPU where one is declared."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    with_gpu = [a for a, info in workers.items() if (info.get("resources") or {}).get(GPU_RESOURCE, 0) >= 1]
    if opts.device.startswith("cuda"):
        if not with_gpu:
            raise InputError(
                f"--device {opts.device}: no worker of the Dask cluster declares a {GPU_RESOURCE} resource; start "
                f"GPU workers with --resources {GPU_RESOURCE}=1 (one per GPU), or pass --device cpu"
            )
        return {GPU_RESOURCE: 1}
    if opts.device == "auto" and with_gpu:
        return {GPU_RESOURCE: 1}
    return None


def worker_device(device: str) -> str:
    """The torch device a worker should use: a local CUDA worker sees its one GPU as plain `cuda`."""
    return "cuda" if os.environ.get("FACEBATCH_WORKER_GPU") else device


def _local_cluster(opts: ClusterOptions):
    from distributed import Nanny, Scheduler, SpecCluster

    workers, threads, gpus = local_layout(opts)
    specs = {}
    for i, gpu in enumerate(gpus):
        env = {var: str(threads) for var in THREAD_ENV_VARS}
        options = dict(nthreads=1, env=env, host="127.0.0.1", dashboard=False, silence_logs=40)
        if gpu is not None:
            env.update(CUDA_VISIBLE_DEVICES=gpu, FACEBATCH_WORKER_GPU=gpu)
            options["resources"] = {GPU_RESOURCE: 1}
        if opts.memory_limit:
            from distributed.worker_memory import parse_memory_limit

            options["memory_limit"] = parse_memory_limit(
                opts.memory_limit, 1, workers, logger=logging.getLogger(__name__)
            )
        specs[i] = {"cls": Nanny, "options": options}
    scheduler = {"cls": Scheduler, "options": dict(host="127.0.0.1", dashboard_address=":0", dashboard=_has_bokeh())}
    # Ignore SIGINT while the worker processes are spawned: they inherit it, so a Ctrl-C in the
    # terminal reaches only this client, which cancels the run and closes the cluster cleanly.
    with _sigint_ignored():
        return SpecCluster(workers=specs, scheduler=scheduler, silence_logs=40, name="facebatch")


def _local_threads_cluster(opts: ClusterOptions):
    from distributed import LocalCluster

    workers, _, _ = local_layout(opts)
    return LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=False, dashboard_address=None, silence_logs=40
    )


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to do
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def open_client(opts: ClusterOptions) -> Iterator["object"]:
    """A connected distributed.Client; the local cluster (if any) is closed on exit, even on Ctrl-C."""
    from distributed import Client

    opts.validate()
    cluster = None
    try:
        if opts.remote:
            client = _connect(opts)
            try:
                client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
            except TimeoutError:
                client.close()
                raise InputError(f"the Dask scheduler has no workers after {CONNECT_TIMEOUT_S} s") from None
            _check_versions(client)
        else:
            cluster = _local_cluster(opts) if opts.processes else _local_threads_cluster(opts)
            client = Client(cluster)
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
    finally:
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=10)


def _connect(opts: ClusterOptions):
    """A Client for an existing scheduler; everything before it is bounded by CONNECT_TIMEOUT_S.

    Dask's own timeout covers opening the connection only: an address where something else listens may
    accept and then say nothing (the handshake waits forever) or answer with bytes Dask reads as a message
    length (a MemoryError). So the address (from --scheduler, or read from the scheduler file here) is
    first probed with Dask's comm layer under an asyncio deadline, asking for the server's identity; only
    a server that answers as a Dask scheduler gets a Client. Every failure is one InputError.
    """
    from distributed import Client

    address = opts.scheduler or _address_from_file(Path(opts.scheduler_file))
    try:
        asyncio.run(_probe(address))
    except InputError:
        raise
    except (asyncio.TimeoutError, TimeoutError):
        raise InputError(
            f"no Dask scheduler answered at {address} within {CONNECT_TIMEOUT_S} s (nothing listens there, or "
            "something that does not speak Dask's protocol; check the address and port)"
        ) from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"{address!r} is not a valid Dask scheduler address ({first_line(exc)})") from None
    except (MemoryError, OverflowError):
        raise InputError(f"{address} is not a Dask scheduler (it answered with something else)") from None
    except Exception as exc:  # noqa: BLE001 - OSError, CommClosedError, a garbled reply: all one line
        raise InputError(f"cannot reach the Dask scheduler at {address}: {first_line(exc)}") from None
    try:
        return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as exc:
        raise InputError(f"cannot reach the Dask scheduler at {address}: {first_line(exc)}") from None


async def _probe(address: str) -> None:
    from distributed.comm import connect

    deadline = CONNECT_TIMEOUT_S
    comm = await asyncio.wait_for(connect(address, timeout=deadline), deadline + 1)
    try:
        await asyncio.wait_for(comm.write({"op": "identity", "reply": True}), deadline)
        reply = await asyncio.wait_for(comm.read(), deadline)
    finally:
        comm.abort()
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        raise InputError(f"{address} answers, but not as a Dask scheduler")


def _address_from_file(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"--scheduler-file {path} is not a readable Dask scheduler file: {first_line(exc)}") from None
    address = info.get("address") if isinstance(info, dict) else None
    if not isinstance(address, str) or not address:
        raise InputError(f"--scheduler-file {path} is not a Dask scheduler file (JSON with an 'address')")
    return address


def _check_versions(client) -> None:
    """Different package versions on client and workers break unpickling in odd ways: refuse up front."""
    try:
        client.get_versions(check=True)
    except ValueError as exc:
        raise InputError(f"the Dask workers run other package versions than this client: {exc}") from None


def describe(opts: ClusterOptions) -> str:
    if opts.scheduler:
        return f"Dask scheduler {opts.scheduler}"
    if opts.scheduler_file:
        return f"Dask scheduler file {opts.scheduler_file}"
    if opts.in_process:
        threads = opts.torch_threads()
        return f"this process (no Dask), {threads} torch thread{'s' if threads != 1 else ''}"
    workers, threads, gpus = local_layout(opts)
    where = f"GPUs {','.join(g for g in gpus if g)}" if any(gpus) else f"CPU, {threads} torch threads each"
    over = workers * threads > thread_budget() and not any(gpus)
    warning = f"; {workers * threads} threads on {thread_budget()} usable cores is oversubscribed" if over else ""
    return f"local Dask cluster: {workers} worker process{'es' if workers != 1 else ''} ({where}{warning})"
