"""Shared paths and fixtures. Real data and reference fixtures live in ../shared beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
REFERENCE = SHARED / "fixtures" / "reference"


def require(path: Path) -> Path:
    """Skip locally when ../shared is absent; in CI (FACEBATCH_REQUIRE_SHARED=1) fail instead."""
    if not path.exists():
        message = f"{path} is absent (it lives in ../shared beside the repo, not in the repo)"
        if os.environ.get("FACEBATCH_REQUIRE_SHARED"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return require(REFERENCE)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require(DATA)


NVLABS_WEIGHTS = REFERENCE / "nvlabs_sg2ada_64_weights.pt"
ROSINALITY_WEIGHTS = REFERENCE / "rosinality_64_weights.pt"


def build_nvlabs_fixture():
    """(G, D) of the 64-px NVlabs reference fixture, built from its state dicts, eval mode, frozen."""
    import torch

    from facebatch.nets.stylegan2 import Discriminator, Generator

    ckpt = torch.load(require(NVLABS_WEIGHTS), weights_only=True)
    G = Generator(**ckpt["G_init_kwargs"])
    G.load_state_dict(ckpt["G_ema_state_dict"], strict=True)
    D = Discriminator(**ckpt["D_init_kwargs"])
    D.load_state_dict(ckpt["D_state_dict"], strict=True)
    for net in (G, D):
        net.eval().requires_grad_(False)
    return G, D


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
