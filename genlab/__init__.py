"""genlab: generative image models (autoencoders, VAEs, VQ-VAEs, flows, GANs) on PyTorch Lightning."""

__version__ = "0.1.0"
