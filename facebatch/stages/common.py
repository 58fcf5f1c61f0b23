"""What several stages share: the torch device and generator a worker loads once (with its torch threads) and
the seed each image (or pair) derives from the run seed."""

from __future__ import annotations

import hashlib
from typing import Any

from facebatch.pipeline.records import WorkerSetup


def torch_device(setup: WorkerSetup) -> Any:
    """The torch device of this worker, its torch threads set first (the runner's choice for this process).
    `setup.device` is already narrowed by the runner to what this worker may use."""
    import torch

    from facebatch.nets.device import resolve_device

    if setup.torch_threads:
        torch.set_num_threads(int(setup.torch_threads))
    return resolve_device(setup.device or "auto")


def worker_networks(setup: WorkerSetup, path: str, sha256: str, *, with_d: bool = True) -> tuple[Any, Any]:
    """(networks, torch device) for a worker: the file the client saw (`sha256`, its check of the file at
    `path`), on the run's device."""
    from facebatch.nets.checkpoints import load_networks

    device = torch_device(setup)
    nets = load_networks(path, device=str(device), with_d=with_d, expect_sha256=sha256)
    return nets, device


def per_image_seed(seed: int, image_id: str) -> int:
    """63-bit seed from (run seed, image_id): the same image gets the same noise in any shard or batch."""
    digest = hashlib.sha256(f"{int(seed)}\0{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
