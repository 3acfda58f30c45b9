"""Figure callbacks: every one depends only on the model protocol and logs through `log_figure`."""

from .codebook import CodebookModel, CodebookProjection
from .compile import Compile
from .conditional import ConditionalGrid
from .defaults import default_callbacks
from .evaluation import TestMetrics
from .figures import grid_figure, log_figure, show_grid
from .interpolation import LatentInterpolation, interpolate, interpolate_latents
from .latent_pca import LatentPCA, compare_latent_pca
from .latent_space_2d import LatentSpace2D
from .loss_curves import LossCurves
from .reconstructions import Reconstructions
from .reliability import GracefulInterrupt, LatestCheckpoint, NonFiniteGuard, RandomState
from .render import FIGURES, render_from_checkpoint
from .sample_pca import SamplePCA
from .samples import SampleGrid
from .traversal import LatentTraversal, rank_dimensions

__all__ = ["FIGURES", "CodebookModel", "CodebookProjection", "Compile", "ConditionalGrid", "GracefulInterrupt",
           "LatentInterpolation", "LatentPCA", "LatentSpace2D", "LatentTraversal", "LatestCheckpoint", "LossCurves",
           "NonFiniteGuard", "RandomState", "Reconstructions", "SampleGrid", "SamplePCA", "TestMetrics",
           "compare_latent_pca",
           "default_callbacks", "grid_figure", "interpolate", "interpolate_latents", "log_figure", "rank_dimensions",
           "render_from_checkpoint", "show_grid"]
