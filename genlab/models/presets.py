"""Ready-made models: each is `Autoencoder` with modules chosen from primitive arguments, nothing more.

Every argument is a primitive, so the CLI can set it and a checkpoint records exactly these values.
`image_shape` is linked from the datamodule by the CLI, and `num_classes` too for conditional models.

The arguments the presets share are described once, in `Autoencoder`'s Args (the CLI's help shows them for each
preset): KL control on every VAE-type preset, `beta` (Higgins et al., 2017), `kl_warmup_steps`, `kl_cycles` and
`kl_cycle_ratio` (cyclical annealing, Fu et al., 2019; `losses.kl_annealing`) and `free_bits` (Kingma et al., 2016;
`losses.free_bits_kl`); whatever these are, validation and test also log the true `neg_elbo`. Likelihood on every
preset: `likelihood` (`losses.LIKELIHOODS`), `sigma` and `mixture_components`; the decoder outputs as many
channels as the likelihood needs.
"""

from collections.abc import Sequence

from torch import nn

from .autoencoder import Autoencoder
from .blocks import (ConvDecoder, ConvEncoder, GaussianNoise, LabelCondition, MLPDecoder, MLPEncoder, NullEncoder,
                     PoolingConvDecoder, PoolingConvEncoder, QuarterCondition, check_positive)
from .bottlenecks import FlowGaussianBottleneck, GaussianBottleneck, IdentityBottleneck
from .flows import IAFFlow, PlanarFlow
from .losses import output_channels

CONDITIONS = ("label", "quarter", "none")
FLOWS = ("planar", "iaf")


def decoder_shape(image_shape: Sequence[int], likelihood: str, components: int) -> tuple[int, int, int]:
    """(output channels, H, W) the decoder must produce for `likelihood` (e.g. 3 K C for a logistic mixture)."""
    channels, height, width = image_shape
    return output_channels(likelihood, channels, components), height, width


class AE(Autoencoder):
    """Fully connected autoencoder with LeakyReLU and a sigmoid output; `AE(latent_dim=2)` is the course's 2-D one."""

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 16,
                 hidden: Sequence[int] = (512, 256), likelihood: str = "bernoulli", sigma: float = 1.0,
                 mixture_components: int = 10, lr: float = 1e-3) -> None:
        check_positive(image_shape=image_shape, latent_dim=latent_dim, hidden=hidden)
        bottleneck = IdentityBottleneck(latent_dim)
        out_shape = decoder_shape(image_shape, likelihood, mixture_components)
        super().__init__(MLPEncoder(image_shape, bottleneck.in_features, hidden, "leaky_relu"), bottleneck,
                         MLPDecoder(latent_dim, out_shape, hidden[::-1], "leaky_relu"),
                         image_shape, likelihood, sigma, lr)


class VAE(Autoencoder):
    """Fully connected VAE (Kingma & Welling, 2014): Gaussian posterior, N(0, I) prior, `beta` on the KL."""

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 16,
                 hidden: Sequence[int] = (512, 256), beta: float = 1.0, free_bits: float = 0.0,
                 kl_warmup_steps: int = 0, kl_cycles: int = 1, kl_cycle_ratio: float = 1.0,
                 likelihood: str = "bernoulli", sigma: float = 1.0, mixture_components: int = 10,
                 lr: float = 1e-3) -> None:
        check_positive(image_shape=image_shape, latent_dim=latent_dim, hidden=hidden)
        bottleneck = GaussianBottleneck(latent_dim, beta, free_bits, kl_warmup_steps, kl_cycles, kl_cycle_ratio)
        out_shape = decoder_shape(image_shape, likelihood, mixture_components)
        super().__init__(MLPEncoder(image_shape, bottleneck.in_features, hidden), bottleneck,
                         MLPDecoder(latent_dim, out_shape, hidden[::-1]), image_shape, likelihood, sigma, lr)


class ConvAE(Autoencoder):
    """Convolutional autoencoder: one stride-2 conv per entry of `widths`, mirrored by transposed convs."""

    def __init__(self, image_shape: Sequence[int] = (3, 32, 32), latent_dim: int = 128,
                 widths: Sequence[int] = (32, 64, 128), batch_norm: bool = False,
                 attention_resolutions: Sequence[int] = (), likelihood: str = "bernoulli", sigma: float = 1.0,
                 mixture_components: int = 10, lr: float = 1e-3) -> None:
        check_positive(image_shape=image_shape, latent_dim=latent_dim, widths=widths)
        bottleneck = IdentityBottleneck(latent_dim)
        out_shape = decoder_shape(image_shape, likelihood, mixture_components)
        super().__init__(ConvEncoder(image_shape, bottleneck.in_features, widths, batch_norm,
                                     attention_resolutions=attention_resolutions), bottleneck,
                         ConvDecoder(latent_dim, out_shape, widths, batch_norm,
                                     attention_resolutions=attention_resolutions), image_shape, likelihood, sigma, lr)


class ConvVAE(Autoencoder):
    """The course ConvVAE: three stride-2 convs, latent 128 for 32x32 RGB, optional batch norm, `beta` on the KL."""

    def __init__(self, image_shape: Sequence[int] = (3, 32, 32), latent_dim: int = 128,
                 widths: Sequence[int] = (32, 64, 128), batch_norm: bool = False,
                 attention_resolutions: Sequence[int] = (), beta: float = 1.0,
                 free_bits: float = 0.0, kl_warmup_steps: int = 0, kl_cycles: int = 1, kl_cycle_ratio: float = 1.0,
                 likelihood: str = "bernoulli", sigma: float = 1.0, mixture_components: int = 10,
                 lr: float = 1e-3) -> None:
        check_positive(image_shape=image_shape, latent_dim=latent_dim, widths=widths)
        bottleneck = GaussianBottleneck(latent_dim, beta, free_bits, kl_warmup_steps, kl_cycles, kl_cycle_ratio)
        out_shape = decoder_shape(image_shape, likelihood, mixture_components)
        super().__init__(ConvEncoder(image_shape, bottleneck.in_features, widths, batch_norm,
                                     attention_resolutions=attention_resolutions), bottleneck,
                         ConvDecoder(latent_dim, out_shape, widths, batch_norm,
                                     attention_resolutions=attention_resolutions), image_shape, likelihood, sigma, lr)


class DenoisingAE(Autoencoder):
    """Convolutional denoising autoencoder (Vincent et al., 2008): trained to map x + N(0, noise_std^2), clipped
    to [0, 1], back to the clean x with a squared-error (Gaussian) likelihood. Three conv + batch norm + LeakyReLU +
    max-pool layers down, three transposed convs up; about 12k parameters on MNIST. `corrupt(x)` gives the noisy
    input, `reconstruct(noisy)` the denoised image. The code is the flattened last feature map. `loss` (so
    val/loss) scores denoising of freshly corrupted inputs; the loop's val/mse is the clean reconstruction.

    Args:
        widths: channels of each conv 3x3 + batch norm + LeakyReLU + 2x2 max-pool layer; the decoder mirrors them.
        noise_std: standard deviation of the Gaussian corruption, in [0, 1] pixel units (0: a plain autoencoder).
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), widths: Sequence[int] = (8, 16, 32),
                 noise_std: float = 0.5, likelihood: str = "gaussian", sigma: float = 1.0,
                 mixture_components: int = 10, lr: float = 1e-3) -> None:
        check_positive(image_shape=image_shape, widths=widths)
        if noise_std < 0:
            raise ValueError(f"noise_std={noise_std} must be >= 0")
        encoder = PoolingConvEncoder(image_shape, widths)
        decoder = PoolingConvDecoder(decoder_shape(image_shape, likelihood, mixture_components), widths)
        super().__init__(encoder, IdentityBottleneck(encoder.out_features), decoder, image_shape, likelihood, sigma, lr,
                         corruption=GaussianNoise(noise_std))


def make_condition(condition: str, image_shape: Sequence[int], num_classes: int | None) -> nn.Module | None:
    """The conditioner for `condition` ("label": one-hot y; "quarter": lower-left quarter of x; "none")."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition={condition!r} is unknown; choose one of {CONDITIONS}")
    if condition == "label":
        if num_classes is None or num_classes < 1:
            raise ValueError(f"condition='label' needs num_classes (got num_classes={num_classes!r}); the CLI "
                             "links it from the datamodule, which must have labels")
        return LabelCondition(num_classes)
    return QuarterCondition(image_shape) if condition == "quarter" else None


class CVAE(Autoencoder):
    """Conditional VAE (Sohn et al., 2015): `VAE` whose encoder and decoder also see a condition c.

    `condition="label"`: c = one-hot(y). `"quarter"`: c = the lower-left quarter of the image (structured output
    prediction); the decoder still generates the whole image. `"none"`: exactly `VAE` (same modules and outputs).
    `sample(n, y)` decodes n prior draws under y: labels (1 or n) for "label"; images (1 or n, C, H, W) for
    "quarter", of which only the lower-left quarter is read, so n samples are n completions of that quarter.
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 16,
                 hidden: Sequence[int] = (512, 256), condition: str = "label", num_classes: int | None = None,
                 beta: float = 1.0, free_bits: float = 0.0, kl_warmup_steps: int = 0, kl_cycles: int = 1,
                 kl_cycle_ratio: float = 1.0, likelihood: str = "bernoulli", sigma: float = 1.0,
                 mixture_components: int = 10, lr: float = 1e-3) -> None:
        check_positive(image_shape=image_shape, latent_dim=latent_dim, hidden=hidden)
        conditioner = make_condition(condition, image_shape, num_classes)
        features = 0 if conditioner is None else conditioner.features
        bottleneck = GaussianBottleneck(latent_dim, beta, free_bits, kl_warmup_steps, kl_cycles, kl_cycle_ratio)
        out_shape = decoder_shape(image_shape, likelihood, mixture_components)
        super().__init__(MLPEncoder(image_shape, bottleneck.in_features, hidden, cond_features=features), bottleneck,
                         MLPDecoder(latent_dim, out_shape, hidden[::-1], cond_features=features), image_shape,
                         likelihood, sigma, lr, conditioner=conditioner)


class BaselineNN(Autoencoder):
    """Deterministic baseline of Sohn et al. (2015): the CVAE's decoder (same `hidden`) mapping the condition alone
    to the full image, with no latent (latent_dim 0): every "sample" under one condition is the same image.

    Args:
        hidden: widths of the decoder's hidden layers, used reversed (as in the CVAE's decoder).
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), hidden: Sequence[int] = (512, 256),
                 condition: str = "quarter", num_classes: int | None = None, likelihood: str = "bernoulli",
                 sigma: float = 1.0, mixture_components: int = 10, lr: float = 1e-3) -> None:
        check_positive(image_shape=image_shape, hidden=hidden)
        if condition == "none":
            raise ValueError("condition='none' leaves BaselineNN nothing to predict from; use 'label' or 'quarter'")
        conditioner = make_condition(condition, image_shape, num_classes)
        super().__init__(NullEncoder(), IdentityBottleneck(0),
                         MLPDecoder(0, decoder_shape(image_shape, likelihood, mixture_components), hidden[::-1],
                                    cond_features=conditioner.features), image_shape,
                         likelihood, sigma, lr, conditioner=conditioner)


class FlowVAE(Autoencoder):
    """`VAE` whose posterior is refined by `num_flows` flows: amortized planar flows (Rezende & Mohamed, 2015) or
    IAF steps with context from the encoder (Kingma et al., 2016). Logs `log_det` beside a Monte Carlo `kl`.

    Args:
        flow: "planar" (amortised planar flows) | "iaf" (inverse autoregressive flow, alternating variable order).
        num_flows: number of flow steps applied to the posterior sample.
        iaf_update: the IAF step, ignored by "planar": "affine" (z' = m + exp(s) z) | "gated" (the paper's
            z' = sigma z + (1 - sigma) m, sigma = sigmoid(s)).
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 16,
                 hidden: Sequence[int] = (512, 256), flow: str = "planar", num_flows: int = 4,
                 iaf_update: str = "affine", beta: float = 1.0,
                 free_bits: float = 0.0, kl_warmup_steps: int = 0, kl_cycles: int = 1, kl_cycle_ratio: float = 1.0,
                 likelihood: str = "bernoulli", sigma: float = 1.0, mixture_components: int = 10,
                 lr: float = 1e-3) -> None:
        check_positive(image_shape=image_shape, latent_dim=latent_dim, hidden=hidden, num_flows=num_flows)
        if flow not in FLOWS:
            raise ValueError(f"flow={flow!r} is unknown; choose one of {FLOWS}")
        if flow == "planar":
            flows = [PlanarFlow(latent_dim) for _ in range(num_flows)]
        else:  # alternate the autoregressive order between steps, as Kingma et al. do
            flows = [IAFFlow(latent_dim, 4 * latent_dim, 2 * latent_dim, reverse=k % 2 == 1, update=iaf_update)
                     for k in range(num_flows)]
        base = GaussianBottleneck(latent_dim, beta, free_bits, kl_warmup_steps, kl_cycles, kl_cycle_ratio)
        bottleneck = FlowGaussianBottleneck(base, flows)
        out_shape = decoder_shape(image_shape, likelihood, mixture_components)
        super().__init__(MLPEncoder(image_shape, bottleneck.in_features, hidden), bottleneck,
                         MLPDecoder(latent_dim, out_shape, hidden[::-1]), image_shape, likelihood, sigma, lr)
