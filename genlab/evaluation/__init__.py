"""Evaluation of a trained model: `TestMetrics` (every metric that applies, at the end of `genlab test`) and
`PredictionWriter` (samples, reconstructions and codes written by `genlab predict`); `defaults` adds them to those
commands unless one was given."""

from .defaults import add_prediction_writer, add_test_metrics
from .metrics import TestMetrics
from .predictions import PredictionWriter

__all__ = ["PredictionWriter", "TestMetrics", "add_prediction_writer", "add_test_metrics"]
