"""Stopping and resuming a run: `last.ckpt` always current, Ctrl-C/SIGTERM saving one, randomness restored.

- `LatestCheckpoint`: the CLI's ModelCheckpoint; its `last.ckpt` is rewritten at every save point, and a start clears
  the temporary files a killed checkpoint write left in its folder.
- `GracefulInterrupt`: the first Ctrl-C (SIGINT) or SIGTERM finishes the current batch, writes `last.ckpt` and stops
  -- under DDP every rank at the same step; a second Ctrl-C stops at once.
- `RandomState` stores every random generator in the checkpoint and restarts the stream of each epoch and each
  training batch from (seed, epoch, batch, rank).
The position in the epoch is saved by genlab's loader (`BatchLoader.state_dict`), so a run stopped at any step resumes
exactly. The files themselves are written atomically by `genlab.io.AtomicCheckpointIO`.
"""

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from ..errors import GenlabError
from ..io import remove_stale_temp_files

__all__ = ["GracefulInterrupt", "LatestCheckpoint", "RandomState", "TrainingInterrupted", "last_checkpoint_path"]


class TrainingInterrupted(GenlabError):
    """The run was stopped by a signal after saving a checkpoint to resume from."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def last_checkpoint_path(trainer: Trainer) -> Path:
    """Where this run's `last.ckpt` goes: the ModelCheckpoint's folder, else `<log_dir>/checkpoints`."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class LatestCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose `last.ckpt` is always the latest state (every save point), not the latest top-k save.

    Lightning 2.6 rewrites last.ckpt only when a top-k checkpoint is written; once the monitored metric stops
    improving, last.ckpt falls behind and `--ckpt_path last` would silently resume from an older epoch.
    """

    _last_step: int | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and trainer.is_global_zero and self.dirpath and os.path.isdir(self.dirpath):
            for tmp in remove_stale_temp_files(self.dirpath):  # a kill -9 during a save leaves one behind
                rank_zero_info(f"genlab: removed {tmp}, left by an interrupted checkpoint write")

    # Private override, kept: Lightning 2.6 has no public hook saying that last.ckpt was written, and the other
    # writes (top-k, another callback's) must not count as it.
    def _save_last_checkpoint(self, trainer: Trainer, monitor_candidates: dict) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_step = trainer.global_step

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._catch_up(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._catch_up(trainer)

    def _catch_up(self, trainer: Trainer) -> None:
        # ModelCheckpoint's own private predicates and writer: the same rules (every_n_epochs, sanity check, already
        # saved) and the same last.ckpt handling (save_last="link", last_model_path) as Lightning's own saves
        stale = self._last_step != trainer.global_step
        if self.save_last and stale and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class GracefulInterrupt(Callback):
    """First SIGINT/SIGTERM while fitting: finish the batch, write `last.ckpt`, raise `TrainingInterrupted`.

    Under DDP a signal on any rank stops every rank at the same batch end: at each one the ranks agree with one
    all-reduce (max) of a one-element flag, so all save together (Lightning writes on rank zero) and all raise, and the
    CLI exits 128 + signal (143 for SIGTERM, 130 for Ctrl-C) on every rank. Installed at `setup`, before the
    checkpoint is restored and the sanity check runs: a signal before training begins stops at `on_train_start`
    without saving (nothing has been trained). A signal while the data is still being read (before `setup`) keeps the
    default action. A second Ctrl-C raises KeyboardInterrupt at once (nothing more is saved); a second SIGTERM kills
    the process. Replaces Lightning's own SIGTERM handling during `fit` (which stops without saving and, under DDP,
    runs a collective inside the signal handler); the previous handlers are restored when fitting ends.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: int | None = None
        self.previous: dict[int, object] = {}  # the handlers to give back; empty while not fitting
        self.passed_on: dict[int, object] = {}  # the handlers given back, for signals that still reach this one
        self.prefix = ""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.pending, self.prefix = None, f"[rank {trainer.global_rank}] " if trainer.world_size > 1 else ""
        self.previous = {signum: signal.getsignal(signum) for signum in self.SIGNALS}
        self._install()

    def _install(self) -> None:
        """(Re)take the signals: Lightning installs its own SIGTERM handler after `on_fit_start`."""
        if self.previous and threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                signal.signal(signum, self._handle)

    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install()
        if self.previous and (signum := self._agreed_signal(trainer)):
            self._restore()
            raise TrainingInterrupted(f"stopped by {signal.Signals(signum).name} before training began; nothing "
                                      f"new to save: rerun the same command", signum)

    def _handle(self, signum: int, frame: object) -> None:
        if not self.previous:  # fitting has ended (Lightning re-installs this handler after an error): pass it on
            return _pass_on(self.passed_on.get(signum), signum, frame)
        if self.pending is not None:  # the second signal: stop now
            self._restore()
            return _pass_on(signal.SIG_DFL, signum, frame)
        self.pending = signum
        print(f"\ngenlab: {self.prefix}{signal.Signals(signum).name} received: saving a checkpoint after this batch, "
              f"then stopping (press Ctrl-C again to stop at once, without saving)", file=sys.stderr, flush=True)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: object,
                           batch_idx: int) -> None:
        # After an epoch's last batch, stop at its end instead (validation end, or epoch end without validation):
        # Lightning resumes a checkpoint saved there exactly, but from one saved on the last batch it skips the rest
        # of that epoch's end (validation, epoch-end hooks) and the next epoch's start.
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._stop_if_asked(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._stop_if_asked(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._stop_if_asked(trainer)

    def _agreed_signal(self, trainer: Trainer) -> int:
        """The signal any rank received (0 for none), the same on every rank: one all-reduce under DDP."""
        if trainer.world_size == 1:
            return self.pending or 0
        flag = torch.tensor([self.pending or 0], dtype=torch.int32, device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(flag, reduce_op="max").item())

    def _stop_if_asked(self, trainer: Trainer) -> None:
        if not self.previous or not (signum := self._agreed_signal(trainer)):  # not fitting, or no signal
            return
        path = last_checkpoint_path(trainer)
        for callback in trainer.checkpoint_callbacks:  # this file is their last.ckpt: resumed, they rewrite it
            if isinstance(callback, ModelCheckpoint) and callback.dirpath and Path(callback.dirpath) == path.parent:
                callback.last_model_path = str(path)  # (else a resumed run would write last-v1.ckpt beside it)
        trainer.save_checkpoint(path, weights_only=False)  # every rank; the full state: optimisers, loops, callbacks
        self._restore()
        _wait_for_other_ranks(trainer)
        raise TrainingInterrupted(
            f"stopped by {signal.Signals(signum).name} at epoch {trainer.current_epoch}, global step "
            f"{trainer.global_step}; saved {path}; continue with the same command plus --ckpt_path last", signum)

    def _restore(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self.previous.items():
                signal.signal(signum, handler)
        self.passed_on, self.previous = self.previous or self.passed_on, {}

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore()


def _pass_on(handler: object, signum: int, frame: object) -> None:
    """Do what `handler` (a previous handler, SIG_DFL or SIG_IGN) would: the default is KeyboardInterrupt for SIGINT
    and the operating system's action (terminate) for the others."""
    if callable(handler):
        return handler(signum, frame)
    if handler == signal.SIG_IGN:
        return None
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return None


def _wait_for_other_ranks(trainer: Trainer, timeout: float = 30.0) -> None:
    """On the rank that launched the others (Lightning's script launcher): wait for them to exit before exiting.

    Lightning's child-process observer kills the launching process as soon as a child exits non-zero; the children
    are taken off its list first, so every rank reports its own status (143/130) instead of rank zero being killed.
    """
    children = getattr(trainer.strategy.launcher, "procs", None)
    if not isinstance(children, list) or not children:
        return
    waiting, deadline = list(children), time.monotonic() + timeout
    children.clear()  # the observer's own list: an empty list ends its watch
    for child in waiting:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=max(0.0, deadline - time.monotonic()))


class RandomState(Callback):
    """Every RNG (python, numpy, torch, CUDA) in the checkpoint, and the random streams functions of the run's seed,
    the epoch, the batch and the rank.

    At each epoch start python, numpy and torch are seeded from (seed, epoch, rank), and torch again at each training
    batch from (seed, epoch, batch, rank). So a batch's noise (reparameterisation, dropout, GAN latents) is
    independent of anything that ran before it -- validation, figure callbacks, or a restart -- and every DDP rank
    draws its own: a run resumed at any step, on any rank, continues exactly. Noise drawn while a batch is moved to
    the device (MNIST's dynamic binarisation, in `on_after_batch_transfer`, which Lightning runs before
    `on_train_batch_start`) continues the previous batch's stream (the epoch's for batch 0): still fresh each epoch
    and disjoint from the batch's reparameterisation noise. A checkpoint
    also restores the generator states, for python and numpy draws made inside a batch. Seeding torch's CPU generator
    costs microseconds (`torch.manual_seed` itself, which visits every device type, costs about 0.3 ms: not per step).
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.seed is None:  # seed_everything (the CLI's --seed_everything) exports the seed it used
            self.seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed() % 2**32))

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        seed = stream_seed(self.seed, trainer.current_epoch, -1, trainer.global_rank)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)  # seeds every CUDA device too

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int) -> None:
        seed = stream_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        torch.default_generator.manual_seed(seed)
        if torch.cuda.is_initialized():  # not is_available(): without a GPU that asks the driver, 30 us a step
            torch.cuda.manual_seed(seed)  # the current device's generator: the one this rank's model draws from

    def state_dict(self) -> dict:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {"seed": self.seed, "python": random.getstate(), "torch": torch.get_rng_state(),
                 # numpy's key array as a tensor: checkpoints load with weights_only=True, which refuses numpy arrays
                 "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.seed = state["seed"]
        random.setstate(state["python"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


def stream_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    """A 63-bit seed mixing (seed, epoch, batch, rank) (splitmix64 steps: nearby inputs give unrelated seeds)."""
    mixed = 0
    for value in (seed, epoch, batch, rank):
        mixed = (mixed ^ (value % 2**64)) * 0x9E3779B97F4A7C15 % 2**64
        mixed = (mixed ^ (mixed >> 30)) * 0xBF58476D1CE4E5B9 % 2**64
        mixed = (mixed ^ (mixed >> 27)) * 0x94D049BB133111EB % 2**64
        mixed ^= mixed >> 31
    return mixed >> 1
