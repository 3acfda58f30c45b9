"""`default_callbacks`: the figures a model can feed, chosen from the protocols it declares."""

from lightning import Callback

from ..models.protocols import CodebookModel, LatentModel, Sampler, SpatialLatent
from .base import condition_kind
from .codebook import CodebookProjection
from .conditional import ConditionalGrid
from .interpolation import LatentInterpolation
from .latent_pca import LatentPCA
from .latent_space_2d import LatentSpace2D
from .loss_curves import LossCurves
from .reconstructions import Reconstructions
from .samples import SampleGrid
from .traversal import LatentTraversal


def default_callbacks(model: object, every_n_epochs: int = 1) -> list[Callback]:
    """Sampler -> SampleGrid; LatentModel -> Reconstructions, LatentInterpolation, LatentTraversal, LatentPCA
    (and LatentSpace2D when latent_dim == 2); always LossCurves. Models whose code is a spatial grid (a VQ-VAE's
    `grid_shape`, `SpatialLatent`) get Reconstructions only, plus CodebookProjection when they expose a codebook.
    Conditional models (a CVAE, a BaselineNN) get the same list plus
    ConditionalGrid."""
    callbacks: list[Callback] = []
    if isinstance(model, Sampler):  # a VQ-VAE is not one: its CodePrior is
        callbacks.append(SampleGrid(every_n_epochs=every_n_epochs))
    if isinstance(model, LatentModel) and isinstance(model, SpatialLatent):
        callbacks.append(Reconstructions(every_n_epochs=every_n_epochs))  # spatial codes: no vector-latent plots
        if isinstance(model, CodebookModel):
            callbacks.append(CodebookProjection(every_n_epochs=every_n_epochs))
    elif isinstance(model, LatentModel) and model.latent_dim > 0:  # latent_dim 0: a baseline with no code to show
        callbacks += [Reconstructions(every_n_epochs=every_n_epochs),
                      LatentInterpolation(every_n_epochs=every_n_epochs),
                      LatentTraversal(num_dims=min(8, model.latent_dim), every_n_epochs=every_n_epochs),
                      LatentPCA(every_n_epochs=every_n_epochs)]
        if model.latent_dim == 2:
            callbacks.append(LatentSpace2D(every_n_epochs=every_n_epochs))
    if isinstance(model, Sampler) and condition_kind(model) is not None:
        callbacks.append(ConditionalGrid(every_n_epochs=every_n_epochs))
    return callbacks + [LossCurves()]
