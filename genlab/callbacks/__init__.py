"""Every genlab callback under one name, as configs and the command line use them (`genlab.callbacks.SampleGrid`,
`--trainer.callbacks TestMetrics`). They live by what they do: figures in `genlab.figures`, evaluation in
`genlab.evaluation`, run control (guards, resuming, compiling) in `genlab.run_control`."""

from ..evaluation import PredictionWriter, TestMetrics
from ..figures import (FIGURES, CodebookProjection, ConditionalGrid, LatentInterpolation, LatentPCA, LatentSpace2D,
                       LatentTraversal, LossCurves, Reconstructions, SampleGrid, SamplePCA, compare_latent_pca,
                       default_callbacks, grid_figure, interpolate, interpolate_latents, log_figure, rank_dimensions,
                       render_from_checkpoint, show_grid)
from ..models.protocols import CodebookModel
from ..run_control import Compile, GracefulInterrupt, LatestCheckpoint, NonFiniteGuard, RandomState

__all__ = ["FIGURES", "CodebookModel", "CodebookProjection", "Compile", "ConditionalGrid", "GracefulInterrupt",
           "LatentInterpolation", "LatentPCA", "LatentSpace2D", "LatentTraversal", "LatestCheckpoint", "LossCurves",
           "NonFiniteGuard", "PredictionWriter", "RandomState", "Reconstructions", "SampleGrid", "SamplePCA",
           "TestMetrics", "compare_latent_pca", "default_callbacks", "grid_figure", "interpolate",
           "interpolate_latents", "log_figure", "rank_dimensions", "render_from_checkpoint", "show_grid"]
