"""`LossCurves`: every logged loss term over training steps, one panel per term, drawn once at the end of fit."""

import math
from collections import defaultdict

from lightning import Callback, LightningModule, Trainer
from matplotlib.figure import Figure

from .figures import log_figure, panel_figure

STAGES = {"train": "tab:blue", "val": "tab:orange"}  # fixed colours: val is orange in every panel


class LossCurves(Callback):
    """Records `train/*` after every training batch and `val/*` after every validation epoch from
    `trainer.callback_metrics`, and logs one figure with a panel per term (train line, val dots) in `on_fit_end`.
    """

    key = "loss_curves"

    def __init__(self) -> None:
        # history[term][stage] = [(global_step, value), ...]
        self.history: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))

    def record(self, trainer: Trainer, stage: str) -> None:
        for key, value in trainer.callback_metrics.items():
            prefix, _, term = key.partition("/")
            if prefix == stage and term and value.numel() == 1 and math.isfinite(float(value)):
                # Lightning adds "_step"/"_epoch" copies of on_step+on_epoch metrics: keep the base name.
                term = term.removesuffix("_step")
                if not term.endswith("_epoch"):
                    self.history[term][stage].append((trainer.global_step, float(value)))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        self.record(trainer, "train")

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:  # the sanity check's numbers come from an untrained model and 2 batches
            self.record(trainer, "val")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
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
