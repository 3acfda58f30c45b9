"""Figure callbacks and the drawing they share: every callback depends only on the model protocols and ends in
`draw.log_figure`, which writes the PNG and sends it to the loggers.

- `base`: `FigureCallback` (schedule, rank-zero gating, the protocol check, one shared batch of real images);
- `draw`: tensors to figures and figures to files (`grid_figure`, `show_grid`, `panel_figure`, `log_figure`);
- one module per figure; `defaults.default_callbacks` picks those a model can feed, `render` draws one from a
  checkpoint; `loss_curves` plots the logged terms.
"""

from .codebook import CodebookProjection
from .conditional import ConditionalGrid
from .defaults import default_callbacks
from .draw import grid_figure, log_figure, show_grid
from .interpolation import LatentInterpolation, interpolate, interpolate_latents
from .latent_pca import LatentPCA, compare_latent_pca
from .latent_space_2d import LatentSpace2D
from .loss_curves import LossCurves
from .reconstructions import Reconstructions
from .render import FIGURES, render_from_checkpoint
from .sample_pca import SamplePCA
from .samples import SampleGrid
from .traversal import LatentTraversal, rank_dimensions

__all__ = ["FIGURES", "CodebookProjection", "ConditionalGrid", "LatentInterpolation", "LatentPCA", "LatentSpace2D",
           "LatentTraversal", "LossCurves", "Reconstructions", "SampleGrid", "SamplePCA", "compare_latent_pca",
           "default_callbacks", "grid_figure", "interpolate", "interpolate_latents", "log_figure", "rank_dimensions",
           "render_from_checkpoint", "show_grid"]
