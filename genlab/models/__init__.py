"""genlab's models: `from genlab.models import ConvVAE` works in any project with a plain `lightning.Trainer`."""

from .attention import SelfAttention2d
from .autoencoder import Autoencoder
from .classifier import Classifier
from .gan import DCGAN, GAN, Adversarial
from .hierarchical import HierarchicalVAE
from .ppca import PPCA
from .presets import AE, CVAE, VAE, BaselineNN, ConvAE, ConvVAE, DenoisingAE, FlowVAE
from .protocols import LatentModel, Sampler
from .quantizer import VectorQuantizer
from .realnvp import RealNVP, RealNVPPrior
from .vqvae import VQVAE, CodePrior

__all__ = ["AE", "VAE", "ConvAE", "ConvVAE", "DenoisingAE", "CVAE", "BaselineNN", "FlowVAE", "PPCA", "VQVAE",
           "CodePrior", "GAN", "DCGAN", "Adversarial", "Autoencoder", "VectorQuantizer", "LatentModel", "Sampler",
           "Classifier", "HierarchicalVAE", "RealNVP", "RealNVPPrior", "SelfAttention2d"]
