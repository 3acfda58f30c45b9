"""Shared test fixtures: a fixed seed, one intra-op thread, Ctrl-C as Python's own, and where the offline dataset copies
are."""

import os
import signal
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


@pytest.fixture(autouse=True, scope="session")
def _interruptible():
    """Python's own SIGINT handler (KeyboardInterrupt), which the Ctrl-C tests start from: a process launched in the
    background by a shell without job control inherits SIGINT ignored, and then no Ctrl-C reaches it at all."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        yield
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        yield


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
