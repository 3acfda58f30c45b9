"""Callbacks that make a run survive what goes wrong: NaN/Inf, Ctrl-C and SIGTERM, resuming with the same randomness.

`NonFiniteGuard` (here) stops at the first non-finite loss, gradient or weight, before the optimiser step applies it
and before any checkpoint could store it, so the last checkpoint on disk stays a good one. The resume
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

    Before each optimiser step (so the bad update is never applied): the loss just backpropagated plus the global
    2-norm of the gradients being stepped, one scalar -- one fused pass over the gradients (`torch._foreach_norm`)
    and one host sync a step, since a NaN or Inf anywhere reaches that sum. Only when it is non-finite are the terms
    and parameters looked at one by one, to name the culprit (or to find that the norm merely overflowed: then
    training goes on). The weights are checked when a
    checkpoint is about to be written (a huge but finite step can overflow them; the next step's loss then shows it),
    so no checkpoint of non-finite weights is ever written. With a fp16 GradScaler, Inf gradients are the scaler's
    business (it skips that step): then only the loss is checked.
    """

    def __init__(self) -> None:
        self.loss: Tensor | None = None

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        self.loss = loss.detach()

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: object) -> None:
        loss, self.loss = self.loss, None
        grads = [p.grad for group in getattr(optimizer, "param_groups", []) for p in group["params"]
                 if p.grad is not None]
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            grads = []
        if loss is None and not grads:
            return
        total = loss.float().sum() if loss is not None else torch.zeros((), device=grads[0].device)
        if grads:
            # the 2-norm: a fused kernel on every device (the max-norm is ~30x slower on CPU); it overflows only for
            # gradients near 1e19, which the exact look in _diagnose then tells apart
            total = total + torch.nn.utils.get_total_norm(grads, norm_type=2.0).to(total.device)
        if not torch.isfinite(total):  # the step's one host sync
            self._diagnose(trainer, pl_module, loss)

    def _diagnose(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor | None) -> None:
        terms = _bad_terms(trainer, loss)
        bad = next((name for name, p in pl_module.named_parameters()
                    if p.grad is not None and not torch.isfinite(p.grad).all()), None)
        if bad or terms or (loss is not None and not torch.isfinite(loss).all()):
            self._fail(trainer, f"non-finite {terms or 'gradient'} (gradient of {bad})" if bad else
                       f"non-finite {terms or 'loss'}")

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        weights = [p.detach() for p in pl_module.parameters()]
        if weights and not torch.isfinite(torch.nn.utils.get_total_norm(weights, norm_type="inf")):
            bad = next(name for name, w in pl_module.named_parameters() if not torch.isfinite(w).all())
            self._fail(trainer, f"non-finite weights after the optimiser step ({bad})")

    @staticmethod
    def _fail(trainer: Trainer, what: str) -> None:
        raise NonFiniteError(
            f"{what} at epoch {trainer.current_epoch}, global step {trainer.global_step}; training stopped and "
            f"{_saved_checkpoint(trainer)}. Try a lower learning rate, gradient clipping "
            f"(--trainer.gradient_clip_val 1.0) or a KL warm-up")


def _bad_terms(trainer: Trainer, loss: Tensor | None = None) -> str:
    """The logged training terms (and the loss backpropagated) that are NaN/Inf, as 'train/kl = nan, ...'."""
    values = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
    if isinstance(loss, Tensor) and loss.numel() == 1:
        values["loss (backpropagated)"] = loss
    values = {k: v for k, v in values.items() if isinstance(v, Tensor) and v.numel() == 1}
    if not values or torch.isfinite(torch.stack([v.detach().float().cpu() for v in values.values()])).all():
        return ""
    return ", ".join(f"{k} = {v.item()}" for k, v in values.items() if not torch.isfinite(v))
