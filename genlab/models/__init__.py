"""genlab's models: `from genlab.models import ConvVAE` works in any project with a plain `lightning.Trainer`."""

from .attention import SelfAttention2d
from .autoencoder import Autoencoder
from .classifier import Classifier
from .gan import DCGAN, GAN, Adversarial
from .hierarchical import HierarchicalVAE
from .module import GenerativeModule
from .ppca import PPCA
from .presets import AE, CVAE, VAE, BaselineNN, ConvAE, ConvVAE, DenoisingAE, FlowVAE
from .protocols import LatentModel, Sampler
from .quantizer import VectorQuantizer
from .realnvp import RealNVP, RealNVPPrior
from .vaegan import VAEGAN
from .vqvae import VQVAE, CodePrior

__all__ = ["AE", "VAE", "ConvAE", "ConvVAE", "DenoisingAE", "CVAE", "BaselineNN", "FlowVAE", "PPCA", "VQVAE",
           "CodePrior", "GAN", "DCGAN", "VAEGAN", "Classifier", "HierarchicalVAE", "RealNVP", "RealNVPPrior",
           "GenerativeModule", "Adversarial", "Autoencoder", "VectorQuantizer", "SelfAttention2d", "LatentModel",
           "Sampler"]
