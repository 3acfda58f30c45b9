"""genlab's models: `from genlab.models import ConvVAE` works in any project with a plain `lightning.Trainer`."""

from .autoencoder import Autoencoder
from .presets import AE, VAE, ConvAE, ConvVAE
from .protocols import LatentModel, Sampler

__all__ = ["AE", "VAE", "ConvAE", "ConvVAE", "Autoencoder", "LatentModel", "Sampler"]
