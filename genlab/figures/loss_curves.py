"""`LossCurves`: every logged loss term over training steps, one panel per term, drawn once at the end of fit."""

import math
from collections import defaultdict

import torch
from lightning import Callback, LightningModule, Trainer
from matplotlib.figure import Figure
from torch import Tensor

from ..models.module import training_terms
from .draw import log_figure, panel_figure

STAGES = {"train": "tab:blue", "val": "tab:orange"}  # fixed colours: val is orange in every panel


class LossCurves(Callback):
    """Records the training terms of every batch (the model's `last_terms`, kept on the device and read in one
    transfer at each epoch's end: no host sync a step, whatever `log_every_n_steps`) and `val/*` after every
    validation epoch from `trainer.callback_metrics`, and logs one figure with a panel per term (train line, val
    dots) in `on_fit_end`.
    """

    key = "loss_curves"

    def __init__(self) -> None:
        # history[term][stage] = [(global_step, value), ...]
        self.history: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
        self.pending: list[tuple[int, tuple[str, ...], Tensor]] = []  # (step, term names, their values, on device)

    def add(self, stage: str, step: int, names: list[str], values: list[float]) -> None:
        for term, value in zip(names, values):
            # Lightning adds "_step"/"_epoch" copies of on_step+on_epoch metrics: keep the base name.
            term = term.removesuffix("_step")
            if math.isfinite(value) and not term.endswith("_epoch"):
                self.history[term][stage].append((step, value))

    def flush(self) -> None:
        """Move the pending training terms into `history`, one device-to-host transfer for all of them."""
        if self.pending:
            values = torch.cat([v for _, _, v in self.pending]).tolist()
            for step, names, _ in self.pending:
                self.add("train", step, list(names), values[:len(names)])
                values = values[len(names):]
            self.pending = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        terms = training_terms(trainer, pl_module)
        if terms:
            device = next(iter(terms.values())).device
            values = torch.stack([v.detach().reshape(()).to(device, torch.float32) for v in terms.values()])
            self.pending.append((trainer.global_step, tuple(terms), values))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.flush()

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:  # the sanity check's numbers come from an untrained model and 2 batches
            metrics = {key.partition("/")[2]: value for key, value in trainer.callback_metrics.items()
                       if key.startswith("val/") and value.numel() == 1}
            self.add("val", trainer.global_step, list(metrics), [float(v) for v in metrics.values()])

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.flush()
        if trainer.is_global_zero and self.history:
            log_figure(trainer, self.key, self.make_figure())

    def make_figure(self) -> Figure:
        terms = sorted(self.history, key=lambda t: (t != "loss", t))  # the total first
        fig, axes = panel_figure(len(terms), 4.0, 3.0)
        for ax, term in zip(axes, terms):
            for stage, colour in STAGES.items():
                points = self.history[term].get(stage)
                if points:
                    steps, values = zip(*points)
                    style = dict(lw=1) if stage == "train" else dict(marker="o", ms=4, lw=1.5)
                    ax.plot(steps, values, label=stage, color=colour, **style)
            ax.set_title(term, fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        return fig
