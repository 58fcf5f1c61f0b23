"""What several stages share: the generator loaded once per worker (with its torch threads and device) and the
seed each image (or pair) derives from the run seed."""

from __future__ import annotations

import hashlib
from typing import Any


def worker_networks(config: dict, *, with_d: bool = True) -> tuple[Any, Any]:
    """(networks, torch device) for a worker: the file the client saw (same sha256), on the run's device.

    `config` carries ``generator_path`` and ``generator_sha256`` (the client's check of the file),
    ``device`` (already narrowed by the runner to what this worker may use) and ``torch_threads``.
    """
    import torch

    from facebatch.nets.checkpoints import load_networks
    from facebatch.nets.device import resolve_device

    if config.get("torch_threads"):
        torch.set_num_threads(int(config["torch_threads"]))
    device = resolve_device(config.get("device") or "auto")
    nets = load_networks(
        config["generator_path"], device=str(device), with_d=with_d, expect_sha256=config["generator_sha256"]
    )
    return nets, device


def per_image_seed(seed: int, image_id: str) -> int:
    """63-bit seed from (run seed, image_id): the same image gets the same noise in any shard or batch."""
    digest = hashlib.sha256(f"{int(seed)}\0{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
