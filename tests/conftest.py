"""Shared test fixtures: a fixed seed, one intra-op thread, and where the offline dataset copies are."""

import os
from pathlib import Path

import pytest
import torch
from lightning import seed_everything

SHARED_DATA = Path(os.environ.get("GENLAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    seed_everything(0, verbose=False)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread: tiny tensors gain nothing from two, and on a busy 2-core machine two spinning OpenMP
    threads per process made training steps 10-50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Read-only offline copies of real datasets (see its README); tests skip what is absent."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def mnist_root(shared_data) -> str:
    """Root holding the real MNIST; skips the test when the copy is absent."""
    if not (shared_data / "MNIST" / "raw").is_dir():
        pytest.skip(f"real MNIST not found under {shared_data} (set GENLAB_SHARED_DATA)")
    return str(shared_data)
