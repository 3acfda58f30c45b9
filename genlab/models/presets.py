"""Ready-made models: each is `Autoencoder` with modules chosen from primitive arguments, nothing more.

Every argument is a primitive, so the CLI can set it and a checkpoint records exactly these values.
`image_shape` is linked from the datamodule by the CLI, and `num_classes` too for conditional models.

The arguments the presets share are described once, in `Autoencoder`'s Args (the CLI's help shows them for each
preset): KL control on every VAE-type preset, `beta` (Higgins et al., 2017), `kl_warmup_steps`, `kl_cycles` and
`kl_cycle_ratio` (cyclical annealing, Fu et al., 2019; `losses.kl_annealing`), `free_bits` (Kingma et al., 2016;
`losses.free_bits_kl`) and `tc_weight` (beta-TCVAE, Chen et al., 2018; `losses.minibatch_total_correlation`; 1 on
FlowVAE); whatever these are, validation and test also log the true `neg_elbo`. Likelihood on every
preset: `likelihood` (`losses.LIKELIHOODS`), `sigma` and `mixture_components`; the decoder outputs as many
channels as the likelihood needs. The settings only presets have are described in `Preset`'s Args.

A preset is its signature (explicit: the CLI and the checkpoint read it) and one line that passes it on by name:
`preset_arguments(locals())` collects the settings, `gaussian_bottleneck` reads the KL control and the prior from
them and `autoencoder_arguments` the networks (`networks`: MLP, conv or ResNet), likelihood and learning rate.
A variant that differs in one part is a setting here, or one small `Preset` subclass like those below.
"""

from collections.abc import Sequence
from typing import Any

from torch import nn

from .autoencoder import Autoencoder
from .blocks import (ConvDecoder, ConvEncoder, GaussianNoise, LabelCondition, MLPDecoder, MLPEncoder, NullEncoder,
                     PoolingConvDecoder, PoolingConvEncoder, QuarterCondition, check_choice, check_positive)
from .bottlenecks import FlowGaussianBottleneck, GaussianBottleneck, IdentityBottleneck
from .flows import IAFFlow, PlanarFlow
from .losses import output_channels
from .realnvp import RealNVPPrior
from .resnet import ResNetDecoder, ResNetEncoder

CONDITIONS = ("label", "quarter", "none")
FLOWS = ("planar", "iaf")
ARCHITECTURES = {"conv": (ConvEncoder, ConvDecoder), "resnet": (ResNetEncoder, ResNetDecoder)}  # conv presets
PRIORS = ("normal", "realnvp")
KL_SETTINGS = ("beta", "free_bits", "kl_warmup_steps", "kl_cycles", "kl_cycle_ratio", "tc_weight")


def preset_arguments(frame: dict[str, Any]) -> dict[str, Any]:
    """A preset's arguments by name: its `locals()` taken first thing in `__init__`, less `self` and the
    `__class__` cell that `super()` adds. The signature stays explicit (the CLI reads it); the body passes it on."""
    return {name: value for name, value in frame.items() if name not in ("self", "__class__")}


def decoder_shape(image_shape: Sequence[int], likelihood: str, components: int) -> tuple[int, int, int]:
    """(output channels, H, W) the decoder must produce for `likelihood` (e.g. 3 K C for a logistic mixture)."""
    channels, height, width = image_shape
    return output_channels(likelihood, channels, components), height, width


def make_prior(prior: str, latent_dim: int, prior_layers: int) -> nn.Module | None:
    """The learned prior p(z) named by `prior`: None for "normal" (N(0, I)), a `RealNVPPrior` for "realnvp"."""
    check_choice("prior", prior, PRIORS)
    if prior == "normal":
        return None
    check_positive(prior_layers=prior_layers)  # named as the preset names it
    return RealNVPPrior(latent_dim, prior_layers)


def gaussian_bottleneck(latent_dim: int, prior: str = "normal", prior_layers: int = 4,
                        **settings: Any) -> GaussianBottleneck:
    """The VAE presets' bottleneck: the KL control (`KL_SETTINGS`) that a preset's `settings` name (the
    bottleneck's defaults for the others) and the `prior`."""
    kl_control = {name: settings[name] for name in KL_SETTINGS if name in settings}
    return GaussianBottleneck(latent_dim, **kl_control, prior=make_prior(prior, latent_dim, prior_layers))


def networks(image_shape: Sequence[int], latent_dim: int, in_features: int, likelihood: str = "bernoulli",
             mixture_components: int = 10, hidden: Sequence[int] | None = None, widths: Sequence[int] = (),
             batch_norm: bool = False, attention_resolutions: Sequence[int] = (), architecture: str = "conv",
             activation: str = "relu", cond_features: int = 0, **_: Any) -> tuple[nn.Module, nn.Module]:
    """A preset's encoder (images -> `in_features`) and decoder (z -> the likelihood's parameters), from its settings
    (other entries are ignored): fully connected with `hidden` widths (reversed in the decoder) and `activation`
    when the preset has `hidden`, else the conv `architecture` (`ARCHITECTURES`) with `widths`."""
    out_shape = decoder_shape(image_shape, likelihood, mixture_components)
    if hidden is not None:
        return (MLPEncoder(image_shape, in_features, hidden, activation, cond_features),
                MLPDecoder(latent_dim, out_shape, hidden[::-1], activation, cond_features))
    check_choice("architecture", architecture, ARCHITECTURES)
    encoder, decoder = ARCHITECTURES[architecture]
    return (encoder(image_shape, in_features, widths, batch_norm, attention_resolutions=attention_resolutions),
            decoder(latent_dim, out_shape, widths, batch_norm, attention_resolutions=attention_resolutions))


def autoencoder_arguments(settings: dict[str, Any], bottleneck: nn.Module, conditioner: nn.Module | None = None,
                          activation: str = "relu") -> dict[str, Any]:
    """`Autoencoder`'s arguments for a preset: `bottleneck`, the `networks` its `settings` describe (seeing the
    condition when there is a `conditioner`; `activation` unless the settings name one) and the likelihood and
    learning rate they name (else the defaults)."""
    features = 0 if conditioner is None else conditioner.features
    encoder, decoder = networks(**{"activation": activation, **settings}, in_features=bottleneck.in_features,
                                cond_features=features)
    return {"encoder": encoder, "bottleneck": bottleneck, "decoder": decoder, "conditioner": conditioner,
            **{name: settings[name] for name in ("image_shape", "likelihood", "sigma", "lr") if name in settings}}


class Preset(Autoencoder):
    """Base of the presets: an `Autoencoder` built from primitive settings. Describes the settings that only
    presets have (the shared ones are in `Autoencoder`'s Args).

    Args:
        architecture: the conv networks: "conv" (one stride-2 conv per width) | "resnet" (each stride-2 conv
            followed by a pre-activation residual block, `resnet.ResNetEncoder`); the decoder mirrors the encoder.
        prior: p(z): "normal" (N(0, I); the KL in closed form) | "realnvp" (a learned `RealNVPPrior`, the identity
            at initialisation, trained with the model; the KL is then a one-sample Monte Carlo estimate).
        prior_layers: affine coupling layers of the "realnvp" prior (ignored by "normal").
    """


class AE(Preset):
    """Fully connected autoencoder with LeakyReLU and a sigmoid output; `AE(latent_dim=2)` is the course's 2-D one."""

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 16,
                 hidden: Sequence[int] = (512, 256), likelihood: str = "bernoulli", sigma: float = 1.0,
                 mixture_components: int = 10, lr: float = 1e-3) -> None:
        settings = preset_arguments(locals())
        check_positive(image_shape=image_shape, latent_dim=latent_dim, hidden=hidden)
        super().__init__(**autoencoder_arguments(settings, IdentityBottleneck(latent_dim), activation="leaky_relu"))


class VAE(Preset):
    """Fully connected VAE (Kingma & Welling, 2014): Gaussian posterior, N(0, I) prior, `beta` on the KL."""

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 16,
                 hidden: Sequence[int] = (512, 256), beta: float = 1.0, free_bits: float = 0.0,
                 kl_warmup_steps: int = 0, kl_cycles: int = 1, kl_cycle_ratio: float = 1.0, tc_weight: float = 1.0,
                 likelihood: str = "bernoulli", sigma: float = 1.0, mixture_components: int = 10,
                 lr: float = 1e-3, prior: str = "normal", prior_layers: int = 4) -> None:
        settings = preset_arguments(locals())
        check_positive(image_shape=image_shape, latent_dim=latent_dim, hidden=hidden)
        super().__init__(**autoencoder_arguments(settings, gaussian_bottleneck(**settings)))


class ConvAE(Preset):
    """Convolutional autoencoder: one stride-2 conv per entry of `widths`, mirrored by transposed convs (with a
    residual block at each resolution for `architecture="resnet"`)."""

    def __init__(self, image_shape: Sequence[int] = (3, 32, 32), latent_dim: int = 128,
                 widths: Sequence[int] = (32, 64, 128), batch_norm: bool = False,
                 attention_resolutions: Sequence[int] = (), likelihood: str = "bernoulli", sigma: float = 1.0,
                 mixture_components: int = 10, lr: float = 1e-3, architecture: str = "conv") -> None:
        settings = preset_arguments(locals())
        check_positive(image_shape=image_shape, latent_dim=latent_dim, widths=widths)
        super().__init__(**autoencoder_arguments(settings, IdentityBottleneck(latent_dim)))


class ConvVAE(Preset):
    """The course ConvVAE: three stride-2 convs, latent 128 for 32x32 RGB, optional batch norm, `beta` on the KL;
    `architecture="resnet"` adds a pre-activation residual block at each resolution (`ResNetEncoder`)."""

    def __init__(self, image_shape: Sequence[int] = (3, 32, 32), latent_dim: int = 128,
                 widths: Sequence[int] = (32, 64, 128), batch_norm: bool = False,
                 attention_resolutions: Sequence[int] = (), beta: float = 1.0,
                 free_bits: float = 0.0, kl_warmup_steps: int = 0, kl_cycles: int = 1, kl_cycle_ratio: float = 1.0,
                 tc_weight: float = 1.0, likelihood: str = "bernoulli", sigma: float = 1.0,
                 mixture_components: int = 10, lr: float = 1e-3, architecture: str = "conv",
                 prior: str = "normal", prior_layers: int = 4) -> None:
        settings = preset_arguments(locals())
        check_positive(image_shape=image_shape, latent_dim=latent_dim, widths=widths)
        super().__init__(**autoencoder_arguments(settings, gaussian_bottleneck(**settings)))


class DenoisingAE(Preset):
    """Convolutional denoising autoencoder (Vincent et al., 2008): trained to map x + N(0, noise_std^2), clipped
    to [0, 1], back to the clean x with a squared-error (Gaussian) likelihood. Three conv + batch norm + LeakyReLU +
    max-pool layers down, three transposed convs up; about 12k parameters on MNIST. `corruption(x, generator)` gives
    the noisy input, `reconstruct(noisy)` the denoised image. The code is the flattened last feature map. `loss` (so
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
        corruption = GaussianNoise(noise_std) if noise_std > 0 else None  # noise_std 0: not a denoiser
        super().__init__(encoder, IdentityBottleneck(encoder.out_features), decoder, image_shape=image_shape,
                         likelihood=likelihood, sigma=sigma, lr=lr, corruption=corruption)


def make_condition(condition: str, image_shape: Sequence[int], num_classes: int | None) -> nn.Module | None:
    """The conditioner for `condition` ("label": one-hot y; "quarter": lower-left quarter of x; "none")."""
    check_choice("condition", condition, CONDITIONS)
    if condition == "label":
        if num_classes is None or num_classes < 1:
            raise ValueError(f"condition='label' needs num_classes (got num_classes={num_classes!r}); the CLI "
                             "links it from the datamodule, which must have labels")
        return LabelCondition(num_classes)
    return QuarterCondition(image_shape) if condition == "quarter" else None


class CVAE(Preset):
    """Conditional VAE (Sohn et al., 2015): `VAE` whose encoder and decoder also see a condition c.

    `condition="label"`: c = one-hot(y). `"quarter"`: c = the lower-left quarter of the image (structured output
    prediction); the decoder still generates the whole image. `"none"`: exactly `VAE` (same modules and outputs).
    `sample(n, y)` decodes n prior draws under y: labels (1 or n) for "label"; images (1 or n, C, H, W) for
    "quarter", of which only the lower-left quarter is read, so n samples are n completions of that quarter.
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 16,
                 hidden: Sequence[int] = (512, 256), condition: str = "label", num_classes: int | None = None,
                 beta: float = 1.0, free_bits: float = 0.0, kl_warmup_steps: int = 0, kl_cycles: int = 1,
                 kl_cycle_ratio: float = 1.0, tc_weight: float = 1.0, likelihood: str = "bernoulli", sigma: float = 1.0,
                 mixture_components: int = 10, lr: float = 1e-3, prior: str = "normal",
                 prior_layers: int = 4) -> None:
        settings = preset_arguments(locals())
        check_positive(image_shape=image_shape, latent_dim=latent_dim, hidden=hidden)
        conditioner = make_condition(condition, image_shape, num_classes)
        super().__init__(**autoencoder_arguments(settings, gaussian_bottleneck(**settings), conditioner))


class BaselineNN(Preset):
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
        decoder = MLPDecoder(0, decoder_shape(image_shape, likelihood, mixture_components), hidden[::-1],
                             cond_features=conditioner.features)
        super().__init__(NullEncoder(), IdentityBottleneck(0), decoder, image_shape=image_shape, likelihood=likelihood,
                         sigma=sigma, lr=lr, conditioner=conditioner)


class FlowVAE(Preset):
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
                 tc_weight: float = 1.0, likelihood: str = "bernoulli", sigma: float = 1.0,
                 mixture_components: int = 10, lr: float = 1e-3, prior: str = "normal", prior_layers: int = 4) -> None:
        settings = preset_arguments(locals())
        check_positive(image_shape=image_shape, latent_dim=latent_dim, hidden=hidden, num_flows=num_flows)
        check_choice("flow", flow, FLOWS)
        if flow == "planar":
            flows = [PlanarFlow(latent_dim) for _ in range(num_flows)]
        else:  # alternate the autoregressive order between steps, as Kingma et al. do
            flows = [IAFFlow(latent_dim, 4 * latent_dim, 2 * latent_dim, reverse=k % 2 == 1, update=iaf_update)
                     for k in range(num_flows)]
        bottleneck = FlowGaussianBottleneck(gaussian_bottleneck(**settings), flows)
        super().__init__(**autoencoder_arguments(settings, bottleneck))
