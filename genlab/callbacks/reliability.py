"""Callbacks that make a run survive what goes wrong: NaN/Inf, Ctrl-C and SIGTERM, resuming with the same randomness.

`NonFiniteGuard` (here) stops at the first non-finite loss term, gradient or weight, before the optimiser step
applies it and before any checkpoint could store it, so the last checkpoint on disk stays a good one. The resume
callbacks (`LatestCheckpoint`, `GracefulInterrupt`, `RandomState`) live in `resume.py` and are re-exported here.
"""

import os

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from ..errors import GenlabError
from .resume import GracefulInterrupt, LatestCheckpoint, RandomState, TrainingInterrupted, last_checkpoint_path

__all__ = ["GracefulInterrupt", "LatestCheckpoint", "NonFiniteError", "NonFiniteGuard", "RandomState",
           "TrainingInterrupted", "last_checkpoint_path"]


class NonFiniteError(GenlabError):
    """Training produced NaN or Inf."""


def _saved_checkpoint(trainer: Trainer) -> str:
    paths = [p for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)
             for p in (c.last_model_path, c.best_model_path) if p and os.path.isfile(p)]
    return f"the last good checkpoint is {paths[0]}" if paths else "no checkpoint had been written yet"


class NonFiniteGuard(Callback):
    """Raise `NonFiniteError` naming the step and the term (or parameter) at the first NaN/Inf.

    Checked every batch: the logged `train/*` terms and the gradients before each optimiser step (so the bad update
    is never applied), and the weights after it (a huge but finite step can overflow them). Lightning runs
    checkpoint callbacks after this one, so no checkpoint of that step is written.
    """

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: object) -> None:
        grads = {name: p.grad for name, p in pl_module.named_parameters() if p.grad is not None}
        if grads and not _all_finite(grads.values()):
            bad = next(name for name, g in grads.items() if not torch.isfinite(g).all())
            terms = _bad_terms(trainer)
            self._fail(trainer, f"non-finite {terms or 'gradient'} (gradient of {bad})")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: object,
                           batch_idx: int) -> None:
        if terms := _bad_terms(trainer, outputs):
            self._fail(trainer, f"non-finite {terms}")
        weights = dict(pl_module.named_parameters())
        if weights and not _all_finite(weights.values()):
            bad = next(name for name, w in weights.items() if not torch.isfinite(w).all())
            self._fail(trainer, f"non-finite weights after the optimiser step ({bad})")

    @staticmethod
    def _fail(trainer: Trainer, what: str) -> None:
        raise NonFiniteError(
            f"{what} at epoch {trainer.current_epoch}, global step {trainer.global_step}; training stopped and "
            f"{_saved_checkpoint(trainer)}. Try a lower learning rate, gradient clipping "
            f"(--trainer.gradient_clip_val 1.0) or a KL warm-up")


def _all_finite(tensors: object) -> bool:
    tensors = [t.detach() for t in tensors]
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(tensors, norm_type="inf")))  # max |x|: no overflow


def _bad_terms(trainer: Trainer, outputs: object = None) -> str:
    """The logged training terms (and the step's returned loss) that are NaN/Inf, as 'train/kl = nan, ...'."""
    values = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    if isinstance(loss, Tensor) and loss.numel() == 1:
        values["loss (returned by training_step)"] = loss
    values = {k: v for k, v in values.items() if isinstance(v, Tensor) and v.numel() == 1}
    if not values or torch.isfinite(torch.stack([v.detach().float().cpu() for v in values.values()])).all():
        return ""
    return ", ".join(f"{k} = {v.item()}" for k, v in values.items() if not torch.isfinite(v))
