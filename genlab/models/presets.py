"""Ready-made models: each is `Autoencoder` with modules chosen from primitive arguments, nothing more.

Every argument is a primitive, so the CLI can set it and a checkpoint records exactly these values.
`image_shape` is linked from the datamodule by the CLI.
"""

from collections.abc import Sequence

from .autoencoder import Autoencoder
from .blocks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, check_positive
from .bottlenecks import GaussianBottleneck, IdentityBottleneck


class AE(Autoencoder):
    """Fully connected autoencoder with LeakyReLU and a sigmoid output; `AE(latent_dim=2)` is the course's 2-D one."""

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 16,
                 hidden: Sequence[int] = (512, 256), likelihood: str = "bernoulli", sigma: float = 1.0,
                 lr: float = 1e-3) -> None:
        check_positive(image_shape=image_shape, latent_dim=latent_dim, hidden=hidden)
        bottleneck = IdentityBottleneck(latent_dim)
        super().__init__(MLPEncoder(image_shape, bottleneck.in_features, hidden, "leaky_relu"), bottleneck,
                         MLPDecoder(latent_dim, image_shape, hidden[::-1], "leaky_relu"),
                         image_shape, likelihood, sigma, lr)


class VAE(Autoencoder):
    """Fully connected VAE (Kingma & Welling, 2014): Gaussian posterior, N(0, I) prior, `beta` on the KL."""

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 16,
                 hidden: Sequence[int] = (512, 256), beta: float = 1.0, likelihood: str = "bernoulli",
                 sigma: float = 1.0, lr: float = 1e-3) -> None:
        check_positive(image_shape=image_shape, latent_dim=latent_dim, hidden=hidden)
        bottleneck = GaussianBottleneck(latent_dim, beta)
        super().__init__(MLPEncoder(image_shape, bottleneck.in_features, hidden), bottleneck,
                         MLPDecoder(latent_dim, image_shape, hidden[::-1]), image_shape, likelihood, sigma, lr)


class ConvAE(Autoencoder):
    """Convolutional autoencoder: one stride-2 conv per entry of `widths`, mirrored by transposed convs."""

    def __init__(self, image_shape: Sequence[int] = (3, 32, 32), latent_dim: int = 128,
                 widths: Sequence[int] = (32, 64, 128), batch_norm: bool = False, likelihood: str = "bernoulli",
                 sigma: float = 1.0, lr: float = 1e-3) -> None:
        check_positive(image_shape=image_shape, latent_dim=latent_dim, widths=widths)
        bottleneck = IdentityBottleneck(latent_dim)
        super().__init__(ConvEncoder(image_shape, bottleneck.in_features, widths, batch_norm), bottleneck,
                         ConvDecoder(latent_dim, image_shape, widths, batch_norm), image_shape, likelihood, sigma, lr)


class ConvVAE(Autoencoder):
    """The course ConvVAE: three stride-2 convs, latent 128 for 32x32 RGB, optional batch norm, `beta` on the KL."""

    def __init__(self, image_shape: Sequence[int] = (3, 32, 32), latent_dim: int = 128,
                 widths: Sequence[int] = (32, 64, 128), batch_norm: bool = False, beta: float = 1.0,
                 likelihood: str = "bernoulli", sigma: float = 1.0, lr: float = 1e-3) -> None:
        check_positive(image_shape=image_shape, latent_dim=latent_dim, widths=widths)
        bottleneck = GaussianBottleneck(latent_dim, beta)
        super().__init__(ConvEncoder(image_shape, bottleneck.in_features, widths, batch_norm), bottleneck,
                         ConvDecoder(latent_dim, image_shape, widths, batch_norm), image_shape, likelihood, sigma, lr)
