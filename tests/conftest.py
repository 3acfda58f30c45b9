"""Shared test fixtures: a fixed seed for every test and the location of the offline dataset copies."""

import os
from pathlib import Path

import pytest
from lightning import seed_everything


@pytest.fixture(autouse=True)
def _seed() -> None:
    seed_everything(0, verbose=False)


@pytest.fixture
def shared_data() -> Path:
    """Read-only offline copies of real datasets (see its README); tests skip what is absent."""
    return Path(os.environ.get("GENLAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
