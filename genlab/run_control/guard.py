"""`NonFiniteGuard`: stops at the first non-finite loss, gradient or weight, names its step and culprit, and never
lets a checkpoint store it, so the last checkpoint on disk stays a good one."""

import math
import os
from typing import NamedTuple

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from ..errors import GenlabError
from ..models.module import training_terms


class NonFiniteError(GenlabError):
    """Training produced NaN or Inf."""


def _saved_checkpoint(trainer: Trainer) -> str:
    paths = [p for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)
             for p in (c.last_model_path, c.best_model_path) if p and os.path.isfile(p)]
    return f"the last good checkpoint is {paths[0]}" if paths else "no checkpoint had been written yet"


class StepRecord(NamedTuple):
    """One optimiser step as the guard saw it, on the device: the flag to read later and what names a culprit."""

    epoch: int
    step: int
    total: Tensor  # the loss plus the gradients' global 2-norm
    loss: Tensor | None
    norms: Tensor | None  # each checked gradient's 2-norm
    params: list[Tensor]  # the parameters of those gradients
    terms: dict[str, Tensor] | None  # the step's training terms, kept when the flag is read later
    after_unchecked: tuple[int, int] | None  # (epoch, step) of the step before, when its gradients went unchecked


class NonFiniteGuard(Callback):
    """Raise `NonFiniteError` naming the step and the term (or parameter) at the first NaN/Inf; never let a checkpoint
    store non-finite weights.

    Each optimiser step adds one flag on the device: the loss just backpropagated plus the global 2-norm of the
    gradients being stepped (one fused `_foreach_norm`), since a NaN or Inf anywhere reaches that sum. The host reads
    the flags every `sync_every_n_steps` steps, at each epoch's end and before every checkpoint is written; only a
    flagged step is looked at term by term and parameter by parameter, from its own record (the step just taken: from
    its gradients, so a norm that merely overflowed lets training go on), so a late look still names the first bad
    step.

    The defaults follow the device. On the CPU a host sync is free and the norm is the cost (one pass over the
    gradients, ~3 % of a small MLP's step): flags are read every step, and the gradients checked every
    `log_every_n_steps` steps, the loss every step. A NaN gradient on an unchecked step shows as non-finite weights
    in the next step's loss, which then names that parameter and step. On an accelerator the norm is cheap and the sync
    the cost: gradients every step, flags read every `log_every_n_steps` steps (so up to that many bad updates are
    applied before training stops; read late, a gradient whose 2-norm overflows float32, entries beyond ~1e19, counts
    as non-finite). Either way the weights are scanned before a checkpoint is written. With a fp16 GradScaler, Inf
    gradients are the scaler's business (it skips that step): then only the loss is checked.
    """

    def __init__(self, sync_every_n_steps: int | None = None, gradients_every_n_steps: int | None = None) -> None:
        for name, value in (("sync_every_n_steps", sync_every_n_steps),
                            ("gradients_every_n_steps", gradients_every_n_steps)):
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 or None (follow the device), got {value!r}")
        self.sync_every, self.gradients_every = sync_every_n_steps, gradients_every_n_steps
        self.loss: Tensor | None = None
        self.pending: list[StepRecord] = []
        self.steps = 0  # optimiser steps seen, for the gradient check's schedule
        self.unchecked: tuple[int, int] | None = None  # (epoch, step) of the last step, if its gradients went unchecked

    def periods(self, trainer: Trainer, device: torch.device) -> tuple[int, int]:
        """(read the flags every, check the gradients every) so many steps."""
        every = max(1, getattr(trainer, "log_every_n_steps", 50))
        cpu = device.type == "cpu"
        return self.sync_every or (1 if cpu else every), self.gradients_every or (every if cpu else 1)

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        self.loss = loss.detach()

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: object) -> None:
        loss, self.loss = self.loss, None
        groups = getattr(optimizer, "param_groups", [])
        device = loss.device if loss is not None else next((p.device for g in groups for p in g["params"]), None)
        if device is None:
            return
        sync_every, gradients_every = self.periods(trainer, device)
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None
        checked, self.steps = not scaled and self.steps % gradients_every == 0, self.steps + 1
        params = [p for group in groups for p in group["params"] if p.grad is not None] if checked else []
        if loss is None and not params:
            return
        if loss is None:
            total = torch.zeros((), device=params[0].device)
        else:
            total = loss.float() if loss.numel() == 1 else loss.float().sum()
        norms = None
        if params:
            norms = torch.stack(torch._foreach_norm([p.grad for p in params], 2.0))
            total = total + torch.linalg.vector_norm(norms).to(total.device)
        terms = training_terms(trainer, pl_module) if sync_every > 1 else None
        step = (trainer.current_epoch, trainer.global_step)
        self.pending.append(StepRecord(*step, total, loss, norms, params, terms, self.unchecked))
        self.unchecked = None if params else step
        if len(self.pending) >= sync_every:
            self.check(trainer, pl_module, live=True)

    def check(self, trainer: Trainer, pl_module: LightningModule, live: bool = False) -> None:
        """Read the pending flags (one host sync) and raise for the first non-finite step; `live`: called before
        the last pending step's update, so the weights are still those it ran with."""
        records, self.pending = self.pending, []
        if not records:
            return
        if len(records) == 1 and math.isfinite(records[0].total.item()):  # the CPU's usual case: one scalar read
            return
        flags = torch.isfinite(torch.stack([r.total.reshape(()).to(records[0].total.device) for r in records]))
        if bool(flags.all()):
            return
        for index in (~flags).nonzero().flatten().tolist():  # the first that is more than an overflow raises
            self.diagnose(trainer, pl_module, records[index], live and index == len(records) - 1)

    def diagnose(self, trainer: Trainer, pl_module: LightningModule, record: StepRecord, live: bool) -> None:
        broken = _bad_weight(pl_module) if live and record.after_unchecked else None
        if broken is not None:  # the update before this step, its gradients unchecked, broke the weights
            self._fail(trainer, f"non-finite weights after the optimiser step ({broken}), whose gradients were not "
                       "checked", *record.after_unchecked)
        terms = _bad_terms(record.terms if record.terms is not None else training_terms(trainer, pl_module),
                           record.loss)
        bad = None
        if record.norms is not None:
            names = {id(p): name for name, p in pl_module.named_parameters()}
            # the step just taken: look at its gradients themselves (a 2-norm also overflows for gradients ~1e19)
            finite = [bool(torch.isfinite(p.grad).all()) for p in record.params] if live else \
                torch.isfinite(record.norms).tolist()
            bad = next((names.get(id(p), "?") for p, ok in zip(record.params, finite) if not ok), None)
        if not (bad or terms):
            return  # the norm merely overflowed: training goes on
        what = f"non-finite {terms or 'gradient'} (gradient of {bad})" if bad else f"non-finite {terms or 'loss'}"
        self._fail(trainer, what, record.epoch, record.step)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.check(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.check(trainer, pl_module)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        self.check(trainer, pl_module)
        bad = _bad_weight(pl_module)
        if bad is not None:
            self._fail(trainer, f"non-finite weights after the optimiser step ({bad})", trainer.current_epoch,
                       trainer.global_step)

    @staticmethod
    def _fail(trainer: Trainer, what: str, epoch: int, step: int) -> None:
        raise NonFiniteError(
            f"{what} at epoch {epoch}, global step {step}; training stopped and "
            f"{_saved_checkpoint(trainer)}. Try a lower learning rate, gradient clipping "
            f"(--trainer.gradient_clip_val 1.0) or a KL warm-up")


def _bad_weight(module: LightningModule) -> str | None:
    """The name of the first parameter holding a NaN/Inf: one fused 2-norm, and only when it is not finite (NaN/Inf,
    or an overflow) a look at each parameter."""
    weights = [p.detach() for p in module.parameters()]
    if not weights or torch.isfinite(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(weights, 2.0)))):
        return None
    return next((name for name, w in module.named_parameters() if not torch.isfinite(w).all()), None)


def _bad_terms(terms: dict[str, Tensor], loss: Tensor | None = None) -> str:
    """The step's training terms (and the loss backpropagated) that are NaN/Inf, as 'train/kl = nan, ...'."""
    values = {f"train/{name}": value for name, value in terms.items()}
    if isinstance(loss, Tensor) and loss.numel() == 1:
        values["loss (backpropagated)"] = loss
    if not values or torch.isfinite(torch.stack([v.detach().float().cpu() for v in values.values()])).all():
        return ""
    return ", ".join(f"{k} = {v.item()}" for k, v in values.items() if not torch.isfinite(v))
