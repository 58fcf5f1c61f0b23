"""`facebatch info`: what a bug report needs: versions, devices, cache dir and cached models."""

from __future__ import annotations

import os
import platform

from rich.table import Table

from facebatch import __version__
from facebatch.cli.console import out
from facebatch.nets import cache, registry


def info() -> None:
    """Show versions, torch devices, the model cache and what is in it."""
    import numpy
    import pyarrow
    import torch

    table = Table(show_header=False, box=None)
    table.add_row("facebatch", __version__)
    table.add_row("python", platform.python_version())
    table.add_row("torch", torch.__version__)
    table.add_row("numpy", numpy.__version__)
    table.add_row("pyarrow", pyarrow.__version__)
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            table.add_row(f"cuda:{i}", torch.cuda.get_device_name(i))
    else:
        table.add_row("device", f"cpu ({torch.get_num_threads()} threads), no CUDA device visible")
    from facebatch.invert.projector import resolve_autocast

    precision = resolve_autocast("auto", torch.device("cpu"))
    table.add_row(
        "cpu projection", "bf16 autocast (autocast=auto)" if precision == "bf16" else "fp32 (no bf16 on this CPU)"
    )
    from facebatch.pipeline.cluster import ClusterOptions, describe, thread_budget, usable_cores

    omp = os.environ.get("OMP_NUM_THREADS")
    limit = f", OMP_NUM_THREADS={omp}: at most {thread_budget()} torch threads" if omp else ""
    table.add_row("usable cores", f"{usable_cores()} (CPU affinity){limit}")
    table.add_row("default --workers", describe(ClusterOptions()))
    table.add_row(
        "cache dir", f"{cache.cache_dir()}" + (" (offline: FACEBATCH_OFFLINE is set)" if cache.offline() else "")
    )
    cached = {entry.cache_path(): entry.name for entry in registry.models().values() if entry.is_cached()}
    others = [p for p in cache.cached_files() if p not in cached]
    table.add_row("cached models", ", ".join(cached.values()) or "none (see `facebatch models list`)")
    if others:
        table.add_row("other cached files", ", ".join(p.name for p in others))
    out.print(table)
