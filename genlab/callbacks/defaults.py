"""`default_callbacks`: the figure callbacks a model can feed, for the CLI to add without being asked."""

from lightning import Callback

from ..models.protocols import LatentModel, Sampler
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
    `grid_shape`) get Reconstructions only, and models with `can_sample = False` no SampleGrid.

    Conditional models (e.g. CVAE) get the same list; only Reconstructions and LatentInterpolation pass the
    validation labels on as conditions so far."""
    callbacks: list[Callback] = []
    if isinstance(model, Sampler) and getattr(model, "can_sample", True):  # a VQ-VAE needs a CodePrior first
        callbacks.append(SampleGrid(every_n_epochs=every_n_epochs))
    if isinstance(model, LatentModel) and getattr(model, "grid_shape", None) is not None:
        callbacks.append(Reconstructions(every_n_epochs=every_n_epochs))  # spatial codes: no vector-latent plots
    elif isinstance(model, LatentModel) and model.latent_dim > 0:  # latent_dim 0: a baseline with no code to show
        callbacks += [Reconstructions(every_n_epochs=every_n_epochs),
                      LatentInterpolation(every_n_epochs=every_n_epochs),
                      LatentTraversal(num_dims=min(8, model.latent_dim), every_n_epochs=every_n_epochs),
                      LatentPCA(every_n_epochs=every_n_epochs)]
        if model.latent_dim == 2:
            callbacks.append(LatentSpace2D(every_n_epochs=every_n_epochs))
    return callbacks + [LossCurves()]
