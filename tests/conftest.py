"""Shared paths and fixtures. Real data and reference fixtures live in ../shared beside the repo."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
REFERENCE = SHARED / "fixtures" / "reference"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (it lives in ../shared beside the repo, not in the repo)")
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return require(REFERENCE)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require(DATA)
