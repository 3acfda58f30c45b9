"""Stopping and resuming a run: `last.ckpt` always current, Ctrl-C/SIGTERM saving one, randomness restored.

- `LatestCheckpoint`: the CLI's ModelCheckpoint; its `last.ckpt` is rewritten at every save point.
- `GracefulInterrupt`: the first Ctrl-C (SIGINT) or SIGTERM finishes the current batch, writes `last.ckpt` and stops;
  a second Ctrl-C stops at once.
- `RandomState` stores every random generator in the checkpoint and restarts each epoch's stream from (seed, epoch).
The files themselves are written atomically by `genlab.io.AtomicCheckpointIO`.
"""

import os
import random
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from ..errors import GenlabError

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
        stale = self._last_step != trainer.global_step
        if self.save_last and stale and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class GracefulInterrupt(Callback):
    """First SIGINT/SIGTERM while training: finish the batch, write `last.ckpt`, raise `TrainingInterrupted`.

    A second Ctrl-C raises KeyboardInterrupt at once (nothing more is saved); a second SIGTERM kills the process.
    Replaces Lightning's own SIGTERM handling during `fit` (which stops without saving); the previous handlers are
    restored when training ends.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: int | None = None
        self.previous: dict[int, object] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.pending = None
        if trainer.world_size > 1:
            return  # DDP: saving needs every rank at once; keep Lightning's own SIGTERM handling there
        self.previous = {signum: signal.getsignal(signum) for signum in self.SIGNALS}
        for signum in self.SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.pending is not None:  # the second signal: stop now
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.pending = signum
        print(f"\ngenlab: {signal.Signals(signum).name} received: saving a checkpoint after this batch, then "
              f"stopping (press Ctrl-C again to stop at once, without saving)", file=sys.stderr, flush=True)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: object,
                           batch_idx: int) -> None:
        self._stop_if_asked(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._stop_if_asked(trainer)

    def _stop_if_asked(self, trainer: Trainer) -> None:
        if self.pending is None:
            return
        signum, path = self.pending, last_checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # the full state: optimisers, loops, callbacks
        self._restore()
        raise TrainingInterrupted(
            f"stopped by {signal.Signals(signum).name} at epoch {trainer.current_epoch}, global step "
            f"{trainer.global_step}; saved {path}; continue with the same command plus --ckpt_path last", signum)

    def _restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore()


class RandomState(Callback):
    """Every RNG (python, numpy, torch, CUDA) in the checkpoint, and each epoch's random stream a function of
    (seed, epoch).

    Reseeding at each epoch start makes epoch e's noise (reparameterisation, dropout, GAN latents, shuffling drawn
    from the global generator) independent of anything that ran before it -- validation, figure callbacks, or a
    restart -- so a run resumed from an end-of-epoch checkpoint matches an uninterrupted one exactly. A checkpoint
    written mid-epoch (e.g. on Ctrl-C) restores the exact generator states instead; Lightning does not call
    `on_train_epoch_start` when it resumes mid-epoch, so those states stand.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.seed is None:  # seed_everything (the CLI's --seed_everything) exports the seed it used
            self.seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed() % 2**32))

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        seed = int(np.random.SeedSequence([self.seed % 2**32, trainer.current_epoch]).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # seeds every CUDA device too

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
