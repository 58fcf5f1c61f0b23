"""What several stages' `setup` share: torch threads, the device and the generator, loaded once per worker."""

from __future__ import annotations

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
