"""Evaluation metrics, computed through the model protocol only (genlab.models.protocols)."""

from .images import FeatureNetwork, ReconstructionMetrics, SampleDistances
from .latents import active_units, discretize, entropy, mutual_information, mutual_information_gap
from .likelihood import (bits_per_dim, dequantize, evaluate_likelihood, importance_weighted_log_likelihood,
                         likelihood_method)

__all__ = ["FeatureNetwork", "ReconstructionMetrics", "SampleDistances", "active_units", "bits_per_dim",
           "dequantize", "discretize", "entropy", "evaluate_likelihood", "importance_weighted_log_likelihood",
           "likelihood_method", "mutual_information", "mutual_information_gap"]
