"""Shared paths and fixtures. Real data and reference fixtures live in ../shared beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
REFERENCE = SHARED / "fixtures" / "reference"


def celeba64_measured() -> dict:
    """The built-in celeba64's measured figures (models/celeba64/metrics.json, written by its refresh.py).

    Tests of the model's effects take their floors as fractions of these, so a refreshed model brings its
    own floors with the same margins instead of tests tuned by hand to one set of weights.
    """
    import json

    return json.loads((REPO / "models" / "celeba64" / "metrics.json").read_text())["current"]


def require(path: Path) -> Path:
    """Skip locally when ../shared is absent; in CI (FACEBATCH_REQUIRE_SHARED=1) fail instead."""
    if not path.exists():
        message = f"{path} is absent (it lives in ../shared beside the repo, not in the repo)"
        if os.environ.get("FACEBATCH_REQUIRE_SHARED"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def write_latents(out: Path, ids, ws, ok=None, parts: int = 1, sha: str = "ab" * 32) -> Path:
    """A `project`-like OUT/latents folder in the shared Parquet convention: one row per id, W+ codes
    `ws` [N, num_ws, w_dim] for the ok rows, "error" rows (no latent) where `ok` is False."""
    import numpy as np
    import pyarrow as pa

    from facebatch.pipeline.rundir import RunDir
    from facebatch.pipeline.table import atomic_write_table, latent_array_masked, latents_schema, with_run_metadata

    ok = np.ones(len(ids), bool) if ok is None else np.asarray(ok)
    shape = tuple(np.shape(ws)[1:])
    schema = with_run_metadata(latents_schema(*shape), {"generator_sha256": sha})
    for p, rows in enumerate(np.array_split(np.arange(len(ids)), parts)):
        table = pa.Table.from_arrays(
            [
                pa.array([ids[i] for i in rows]),
                pa.array(["ok" if ok[i] else "error" for i in rows]),
                pa.array([None if ok[i] else "unreadable" for i in rows], pa.string()),
                latent_array_masked(np.asarray(ws)[rows], ok[rows], shape),
            ],
            schema=schema,
        )
        atomic_write_table(RunDir(Path(out)).part(f"part-{p:05d}"), table)
    return Path(out)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return require(REFERENCE)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require(DATA)


NVLABS_WEIGHTS = REFERENCE / "nvlabs_sg2ada_64_weights.pt"
ROSINALITY_WEIGHTS = REFERENCE / "rosinality_64_weights.pt"


def build_nvlabs_fixture():
    """(G, D) of the 64-px NVlabs reference fixture through the library's own loader (eval mode, frozen)."""
    from facebatch.nets.checkpoints import load_networks

    nets = load_networks(require(NVLABS_WEIGHTS))
    return nets.G, nets.D


@pytest.fixture(scope="session")
def nvlabs_nets():
    return build_nvlabs_fixture()


@pytest.fixture(scope="session")
def nvlabs_G(nvlabs_nets):
    return nvlabs_nets[0]


@pytest.fixture(scope="session")
def nvlabs_D(nvlabs_nets):
    return nvlabs_nets[1]


@pytest.fixture(scope="session")
def fixture_generator_path() -> Path:
    """A generator file any `--generator PATH` option accepts (the NVlabs fixture, D included)."""
    return require(NVLABS_WEIGHTS)


# Several engineers share a 2-core machine: multi-threaded BLAS or torch under contention runs ~10x slower.
@pytest.fixture
def one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def restore_torch_threads():
    """--workers 0 runs set torch's thread count in this process; give the rest of the session its own back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
