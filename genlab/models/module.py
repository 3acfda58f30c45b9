"""`GenerativeModule`: the one LightningModule base of every family -- steps, terms and the logging policy.

Each step is the family's `_shared_step(batch, stage)`, by default `loss(x, y)` then `log_terms`: every term as
`<stage>/<name>` (detached tensors: no host sync), the loss on the progress bar. A `self.log` call costs about 0.3-0.5
ms on a CPU, so no step pays one per term: training terms are logged only on the steps Lightning writes to its
loggers (every `log_every_n_steps`, the epoch's last batch, the run's last step), while the terms of every step stay
in `last_terms`, which `NonFiniteGuard` and `LossCurves` read; validation and test terms are summed on the device
(`EpochMeans`) and logged once, at the epoch's last batch, as the same batch-size-weighted means across ranks that
per-step logging gives.
"""

import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from ..io import WeightsOnlyCheckpoint

Batch = tuple[Tensor, Tensor]


class StageSteps:
    """The steps, terms and logging policy of `GenerativeModule`, as a mixin placed before `LightningModule`
    (`training_terms` recognises genlab's modules by it).

    `last_terms`: the latest training step's terms, detached, by name without the stage (`{"loss": ..., "kl": ...}`).
    """

    last_terms: dict[str, Tensor] = {}  # replaced, never mutated: one empty dict shared until the first step
    _epoch_means: "EpochMeans | None" = None  # the running validation/test epoch's sums, until they are logged

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} defines no loss(x, y) -> dict with 'loss'")

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._held_out_step(batch, batch_idx, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._held_out_step(batch, batch_idx, "test")

    def _held_out_step(self, batch: Batch, batch_idx: int, stage: str) -> None:
        if batch_idx == 0:  # a new epoch: nothing left over from an interrupted one
            self._epoch_means = EpochMeans()
        self._shared_step(batch, stage)

    def on_validation_epoch_end(self) -> None:
        self.log_epoch_means()  # only where the last batch went unnoticed (a loader that hides its end)

    def on_test_epoch_end(self) -> None:
        self.log_epoch_means()

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        x, y = batch
        terms = self.loss(x, y)
        self.log_terms(stage, terms, len(x))
        return terms["loss"]

    def remember_terms(self, terms: dict[str, Tensor | float]) -> None:
        """Keep `terms` (detached, tensors) as `last_terms`; no host sync."""
        self.last_terms = {name: value.detach() if isinstance(value, Tensor) else
                           torch.tensor(float(value), device=self.device) for name, value in terms.items()}

    def manual_step(self, optimizer: LightningOptimizer, terms: dict[str, Tensor], name: str) -> None:
        """Manual optimisation: backpropagate `terms[name]` and step `optimizer`, remembering `terms` first so that
        `NonFiniteGuard`, which runs inside the step, can name a bad one."""
        self.remember_terms(terms)
        optimizer.zero_grad()
        self.manual_backward(terms[name])
        optimizer.step()

    def log_terms(self, stage: str, terms: dict[str, Tensor], batch_size: int,
                  extra: dict[str, Tensor | float] | None = None) -> None:
        """Log `terms` (with "loss") as `<stage>/<name>`, plus `extra` (already named `<stage>/...`) beside them;
        in training, remember them all and log only on a logging step."""
        if "loss" not in terms:
            raise ValueError(f"{type(self).__name__}: terms {sorted(terms)} have no 'loss', the total every "
                             "checkpoint and progress bar reads")
        extra = extra or {}
        if stage == "train":
            self.remember_terms({**terms, **{name.partition("/")[2]: value for name, value in extra.items()}})
            if is_logging_step(self._trainer):
                self.log("train/loss", terms["loss"].detach(), prog_bar=True, batch_size=batch_size)
                self.log_dict({**{f"train/{name}": value.detach() for name, value in terms.items() if name != "loss"},
                               **extra}, batch_size=batch_size)
            return
        if self._epoch_means is None:
            self._epoch_means = EpochMeans()
        self._epoch_means.add({**{f"{stage}/{name}": value for name, value in terms.items()}, **extra}, batch_size,
                              self.device)
        if is_last_held_out_batch(self._trainer):
            self.log_epoch_means()

    def log_epoch_means(self) -> None:
        """Log the held-out epoch's means so far (one `self.log` per term, synced across ranks), then forget them."""
        means, self._epoch_means = self._epoch_means, None
        for name, (value, count) in (means.means() if means else {}).items():
            self.log(name, value, prog_bar=name.endswith("/loss"), batch_size=count, sync_dist=True)


class GenerativeModule(WeightsOnlyCheckpoint, StageSteps, LightningModule):
    """Base of every genlab model: define `loss(x, y=None) -> {"loss": ..., other terms}` (nats per image where it
    is a likelihood) and `configure_optimizers`; override `_shared_step` to log extra quantities beside the terms.
    Checkpoints load weights-only (`WeightsOnlyCheckpoint`)."""


class EpochMeans:
    """Running batch-size-weighted sums of scalar terms on their device: `add` costs two tensor ops a term, no sync."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, Tensor | float], batch_size: int, device: torch.device) -> None:
        for name, value in values.items():
            value = torch.as_tensor(value, device=device).detach().float() * batch_size
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] = self.counts.get(name, 0) + batch_size

    def means(self) -> dict[str, tuple[Tensor, int]]:
        """(mean, number of images) of each term."""
        return {name: (total / self.counts[name], self.counts[name]) for name, total in self.sums.items()}


def is_last_held_out_batch(trainer: Trainer | None) -> bool:
    """Whether the running validation/test step is its epoch's last batch (or there is no trainer). Lightning's
    evaluation loop knows it before the step (its one-batch prefetch); with several loaders (each logged apart,
    under its own suffix) every batch counts as last, so their terms are logged per step as before."""
    loop = None if trainer is None else {TrainerFn.FITTING: trainer.fit_loop.epoch_loop.val_loop,
                                         TrainerFn.VALIDATING: trainer.validate_loop,
                                         TrainerFn.TESTING: trainer.test_loop}.get(trainer.state.fn)
    return loop is None or loop.batch_progress.is_last_batch or len(loop.max_batches) > 1


def is_logging_step(trainer: Trainer | None) -> bool:
    """Whether this training step's metrics reach the loggers (or there is no trainer): Lightning's own test (its
    `should_update_logs`: every `log_every_n_steps` batches, or when stopping), the epoch's last batch, and the step
    that reaches `max_steps` (each optimiser steps at most once a batch), so the run's final values are logged."""
    if trainer is None or trainer.is_last_batch:
        return True
    if trainer._logger_connector.should_update_logs:  # private, but what Lightning's own callbacks read
        return True
    return 0 <= trainer.max_steps <= trainer.global_step + len(trainer.optimizers)


def training_terms(trainer: Trainer, module: LightningModule) -> dict[str, Tensor]:
    """The latest training step's scalar terms, by name: a genlab model's `last_terms`, else (any other
    LightningModule) what it logged as `train/<name>` in `trainer.callback_metrics`."""
    terms = module.last_terms if isinstance(module, StageSteps) else None
    if not terms:
        terms = {key.partition("/")[2]: value for key, value in trainer.callback_metrics.items()
                 if key.startswith("train/")}
    return {name: value for name, value in terms.items() if isinstance(value, Tensor) and value.numel() == 1}


def adam(parameters, **settings) -> torch.optim.Adam:
    """`torch.optim.Adam` as one fused kernel when every parameter is on the CPU, where torch's default steps each
    tensor with a few Python-dispatched ops; elsewhere torch's own default (multi-tensor on CUDA, and no clash with
    the fp16 grad scaler's unscaling)."""
    parameters = list(parameters)
    on_cpu = bool(parameters) and all(p.device.type == "cpu" for p in parameters)
    return torch.optim.Adam(parameters, fused=True if on_cpu else None, **settings)


def allow_unused_parameters(module: LightningModule) -> None:
    """Under DDP, let a step leave some parameters without a gradient (two-player models: each optimiser's step uses
    one network). Call it from `setup`, which runs before the strategy wraps the model and reads these kwargs."""
    strategy = module.trainer.strategy if module._trainer is not None else None
    if isinstance(strategy, DDPStrategy) and not isinstance(strategy.model, DistributedDataParallel):
        strategy._ddp_kwargs["find_unused_parameters"] = True  # private: Lightning has no public switch after init
