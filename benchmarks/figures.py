"""Cost of the default figure callbacks per epoch on MNIST (not a test).

Two models, MNIST (real files under --root, default $GENLAB_DATA), batch 100, one thread: the MLP VAE (784-512-256,
latent 16) and a ConvVAE on (1, 28, 28). Each is trained for `--steps` steps per epoch over `--epochs` epochs (no
validation loop, no checkpoints) with `default_callbacks` (what `genlab fit` adds); every figure callback's
`on_train_epoch_end` is timed, split into drawing (data, model, matplotlib) and `log_figure` (rendering, PNG,
loggers). Printed: seconds per epoch of figure work per callback (median over the epochs after the first, which
also pays one-off costs), the first epoch's total, and the training seconds per epoch for scale.

    python benchmarks/figures.py --steps 50 --epochs 4
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from lightning import Callback, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # genlab from this checkout, installed or not

import genlab.figures.base as figure_base  # noqa: E402
from genlab.figures import default_callbacks  # noqa: E402
from genlab.datamodules.mnist import MNIST  # noqa: E402
from genlab.models import VAE, ConvVAE  # noqa: E402

MODELS = {
    "MLP VAE": lambda: VAE((1, 28, 28), latent_dim=16, hidden=(512, 256)),
    "ConvVAE": lambda: ConvVAE((1, 28, 28), latent_dim=16, widths=(32, 64, 128)),
}


class EpochClock(Callback):
    """Training seconds per epoch, figure work excluded (it starts before and ends before the figure hooks)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.end = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(self.end - self.start)


shared, LOG_FIGURE = figure_base.shared_images, figure_base.log_figure  # genlab's own, before any timing


def timed(callbacks: list[Callback], seconds: dict[str, list[float]], saving: dict[str, list[float]]) -> None:
    """Wrap every figure callback's epoch-end hook (and `log_figure` inside it) in timers."""
    log_figure = LOG_FIGURE

    def timed_log(*args, **kwargs):
        start = time.perf_counter()
        try:
            return log_figure(*args, **kwargs)
        finally:
            timed_log.seconds += time.perf_counter() - start

    figure_base.log_figure = timed_log
    for callback in callbacks:
        if not isinstance(callback, figure_base.FigureCallback):
            continue
        hook, name = callback.on_train_epoch_end, type(callback).__name__

        def wrapper(trainer, pl_module, hook=hook, name=name):
            timed_log.seconds, start = 0.0, time.perf_counter()
            hook(trainer, pl_module)
            seconds[name].append(time.perf_counter() - start)
            saving[name].append(timed_log.seconds)

        callback.on_train_epoch_end = wrapper


def measure(name: str, make, root: str, steps: int, epochs: int, share: bool) -> dict[str, float]:
    """Train `make()` with the default figures; print and return the median figure seconds per epoch."""
    figure_base.shared_images = shared if share else figure_base.data_source  # unshared: each callback reads alone
    torch.manual_seed(0)
    model, clock = make(), EpochClock()
    callbacks = default_callbacks(model)
    seconds: dict[str, list[float]] = defaultdict(list)
    saving: dict[str, list[float]] = defaultdict(list)
    timed(callbacks, seconds, saving)
    data = MNIST(root=root, batch_size=100)
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(accelerator="cpu", max_epochs=epochs, limit_train_batches=steps, limit_val_batches=0,
                          logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, default_root_dir=folder, callbacks=[clock, *callbacks])
        trainer.fit(model, datamodule=data)
    later = slice(1, None) if epochs > 1 else slice(None)
    total = [sum(values) for values in zip(*seconds.values())]
    train = statistics.median(clock.seconds[later])
    way = "one shared batch" if share else "each callback its own batch"
    print(f"{name}, {way}: figures {statistics.median(total[later]):.3f} s/epoch (first epoch {total[0]:.3f} s); "
          f"training "
          f"{train:.2f} s for {steps} steps ({steps * 100 / train:.0f} images/s)", flush=True)
    for callback, values in seconds.items():
        print(f"  {callback:20s} {statistics.median(values[later]):.3f} s/epoch, of which log_figure "
              f"{statistics.median(saving[callback][later]):.3f} s (first epoch {values[0]:.3f} s)", flush=True)
    return {callback: statistics.median(values[later]) for callback, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="the folder holding MNIST/raw (default: $GENLAB_DATA)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved shared/unshared rounds (0: shared only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average: {os.getloadavg()}")
    for name, make in MODELS.items():
        totals: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(max(args.rounds, 1)):
            for share in (False, True) if args.rounds else (True,):
                totals[share].append(sum(measure(name, make, args.root, args.steps, args.epochs, share).values()))
        if args.rounds:
            print(f"{name}: figure seconds per epoch, median of {args.rounds} rounds: each callback its own batch "
                  f"{statistics.median(totals[False]):.3f}, one shared batch {statistics.median(totals[True]):.3f}")
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
