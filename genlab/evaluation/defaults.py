"""The evaluation callbacks `genlab test` and `genlab predict` add without being asked, unless one was given."""

from pathlib import Path

from lightning import Callback

from .metrics import TestMetrics
from .predictions import PredictionWriter


def add_test_metrics(callbacks: list[Callback], options: dict, ckpt_path: str | None) -> None:
    """`genlab test` prints, logs and saves (test_metrics.json) every metric that applies to the model; the JSON goes
    next to the trained run's figures and config unless `options` name a `save_dir`."""
    if any(isinstance(c, TestMetrics) for c in callbacks):
        return
    options = dict(options)
    checkpoint = Path(ckpt_path or "")
    if options.get("save_dir") is None and checkpoint.parent.name == "checkpoints":
        options["save_dir"] = str(checkpoint.parent.parent)
    callbacks.append(TestMetrics(**options))


def add_prediction_writer(callbacks: list[Callback], options: dict) -> None:
    """`genlab predict` writes samples, reconstructions and codes into the run's predictions/ folder."""
    if not any(isinstance(c, PredictionWriter) for c in callbacks):
        callbacks.append(PredictionWriter(**options))
