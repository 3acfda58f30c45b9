"""Evaluation metrics, computed through the model protocol only (genlab.models.protocols)."""

from .images import (FeatureNetwork, InceptionFeatures, ReconstructionMetrics, SampleDistances, frechet_distance,
                     kernel_distance, polynomial_mmd, precision_recall_density_coverage)
from .latents import active_units, discretize, entropy, mutual_information, mutual_information_gap
from .likelihood import (bits_per_dim, dequantize, evaluate_likelihood, importance_weighted_log_likelihood,
                         likelihood_method)

__all__ = ["FeatureNetwork", "InceptionFeatures", "ReconstructionMetrics", "SampleDistances", "active_units",
           "bits_per_dim", "dequantize", "discretize", "entropy", "evaluate_likelihood", "frechet_distance",
           "importance_weighted_log_likelihood", "kernel_distance", "likelihood_method", "mutual_information",
           "mutual_information_gap", "polynomial_mmd", "precision_recall_density_coverage"]
