"""GANs: `Adversarial`, the one training loop (manual optimisation), and its presets `GAN` (MLP) and `DCGAN`.

Inside the adversarial game images live in [-1, 1], as in the papers: the generator ends in tanh and real images
are mapped by 2x - 1 before the discriminator sees them. `decode` and `sample` return (tanh + 1) / 2, in [0, 1] like
every datamodule's images. (A sigmoid generator against [0, 1] images is the same map on paper, but in practice its
saturating output let the course MLP's discriminator win within one MNIST epoch and the generator collapsed.)
Objectives: "bce" (Goodfellow et al., 2014, non-saturating, one-sided label smoothing) or "wgan-gp" (Gulrajani et
al., 2017: a critic without sigmoid, batch norm or dropout, gradient penalty, `n_critic` critic steps per generator
step). Settings left at None take the objective's defaults, `OBJECTIVE_DEFAULTS`.
"""

from collections.abc import Sequence
from math import prod

import torch
from lightning import LightningModule
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..io import WeightsOnlyCheckpoint
from .attention import attention_at, check_attention_resolutions
from .blocks import MLPDecoder, check_batch_shape, check_positive
from .gan_losses import (OBJECTIVES, bce_discriminator_loss, bce_generator_loss, gradient_penalty, js_estimate,
                         wasserstein_critic_loss, wasserstein_generator_loss)

Batch = tuple[Tensor, Tensor]

# The papers' settings: TTUR with Radford et al.'s Adam for "bce"; Gulrajani et al. (2017, Alg. 1) for "wgan-gp".
OBJECTIVE_DEFAULTS = {
    "bce": {"lr_d": 4e-4, "beta1": 0.5, "beta2": 0.999, "dropout": 0.3, "n_critic": 1},
    "wgan-gp": {"lr_d": 1e-4, "beta1": 0.0, "beta2": 0.9, "dropout": 0.0, "n_critic": 5},
}


def objective_settings(objective: str, **given: float | None) -> dict[str, float]:
    """`given` with every None replaced by the objective's default (`OBJECTIVE_DEFAULTS`)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is unknown; choose one of {OBJECTIVES}")
    return {name: OBJECTIVE_DEFAULTS[objective][name] if value is None else value for name, value in given.items()}


class MLPDiscriminator(nn.Sequential):
    """Images (B, C, H, W) -> logits (B, 1): Linear + LeakyReLU(0.2) + Dropout (none at 0) per hidden width (the
    course's D)."""

    def __init__(self, image_shape: Sequence[int], hidden: Sequence[int] = (1024, 512, 256),
                 dropout: float = 0.3) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        features = prod(image_shape)
        for width in hidden:
            layers += [nn.Linear(features, width), nn.LeakyReLU(0.2), *([nn.Dropout(dropout)] if dropout else [])]
            features = width
        super().__init__(*layers, nn.Linear(features, 1))


def dcgan_depth(image_shape: Sequence[int]) -> tuple[int, int]:
    """(base, n): a square image of side `base * 2**n`, halved while even and above 7 (64, 32 -> 4; 28 -> 7)."""
    _, height, width = image_shape
    if height != width:
        raise ValueError(f"image_shape={tuple(image_shape)} is invalid: DCGAN needs square images")
    base, depth = height, 0
    while base % 2 == 0 and base > 7:
        base, depth = base // 2, depth + 1
    if depth == 0:
        raise ValueError(f"image_shape={tuple(image_shape)} is invalid: DCGAN needs an even side of at least 8")
    return base, depth


class DCGenerator(nn.Module):
    """z (B, latent_dim) -> logits (B, C, H, W): a transposed conv to base x base, then doubling transposed convs
    with batch norm and ReLU, halving the channels from `width * 2**(n-1)` (Radford et al., 2015)."""

    def __init__(self, latent_dim: int, image_shape: Sequence[int], width: int = 64,
                 attention_resolutions: Sequence[int] = ()) -> None:
        super().__init__()
        base, depth = dcgan_depth(image_shape)
        sides = [base * 2**k for k in range(depth)]  # the feature maps' sides, before the last transposed conv
        check_attention_resolutions(attention_resolutions, [s for s in sides if s % 2 == 0])
        channels = width * 2 ** (depth - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, channels, base, bias=False),
                                   nn.BatchNorm2d(channels), nn.ReLU(), *attention_at(base, channels,
                                                                                      attention_resolutions)]
        for side in sides[1:]:
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(channels // 2), nn.ReLU(), *attention_at(side, channels // 2,
                                                                               attention_resolutions)]
            channels //= 2
        self.net = nn.Sequential(*layers, nn.ConvTranspose2d(channels, image_shape[0], 4, 2, 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])  # (B, latent_dim) -> (B, latent_dim, 1, 1)


class DCDiscriminator(nn.Sequential):
    """Images (B, C, H, W) -> logits (B, 1): strided convs with LeakyReLU(0.2), mirroring `DCGenerator`.

    `norm`: "batch" as in the paper (none on the first layer), or "layer" for WGAN-GP, whose per-sample gradient
    penalty is invalid with batch norm (Gulrajani et al., 2017, section 4).
    """

    def __init__(self, image_shape: Sequence[int], width: int = 64, norm: str = "batch",
                 attention_resolutions: Sequence[int] = ()) -> None:
        if norm not in ("batch", "layer"):
            raise ValueError(f"norm={norm!r} is unknown; choose 'batch' or 'layer'")
        base, depth = dcgan_depth(image_shape)
        sides = [base * 2**k for k in range(depth)][::-1]  # the feature maps' sides after each strided conv
        check_attention_resolutions(attention_resolutions, [s for s in sides if s % 2 == 0])
        layers: list[nn.Module] = [nn.Conv2d(image_shape[0], width, 4, 2, 1), nn.LeakyReLU(0.2),
                                   *attention_at(sides[0], width, attention_resolutions)]
        channels = width
        for side in sides[1:]:
            norm_layer = nn.BatchNorm2d(2 * channels) if norm == "batch" else nn.GroupNorm(1, 2 * channels)
            layers += [nn.Conv2d(channels, 2 * channels, 4, 2, 1, bias=False), norm_layer, nn.LeakyReLU(0.2),
                       *attention_at(side, 2 * channels, attention_resolutions)]
            channels *= 2
        super().__init__(*layers, nn.Conv2d(channels, 1, base), nn.Flatten())


class Adversarial(WeightsOnlyCheckpoint, LightningModule):
    """Generator vs discriminator, trained by manual optimisation: D (or the critic) steps on every batch, G on
    every `n_critic`-th.

    Logs `train/d_loss`, `train/g_loss`, `train/d_real`, `train/d_fake` (mean D probability for "bce", mean critic
    value for "wgan-gp") and `train/gp`. On held-out real images and fresh fakes from fixed noise, the current D's
    divergence estimate, under its name and as `val/loss` (for checkpointing, lower is better):
    `val/js_estimate` for "bce", a lower bound (at most log 4 nats) on 2 JSD(data || model), which is 0 for equal
    laws and log 4 for disjoint ones, with the label smoothing undone (see `js_estimate`); `val/wasserstein_estimate`,
    E C(real) - E C(fake), for "wgan-gp". Either is only as good as D: treat it as a trend and check samples.

    Args:
        generator: network z (B, latent_dim) -> image logits (B, C, H, W), mapped to [-1, 1] by tanh.
        discriminator: network images (B, C, H, W) in [-1, 1] -> one logit (or critic value) per image (B, 1).
        image_shape: (C, H, W) of the data, checked against every batch; the CLI links it from the datamodule.
        latent_dim: dimension of the generator's noise z ~ N(0, I).
        objective: "bce" (non-saturating GAN, Goodfellow et al., 2014) | "wgan-gp" (Gulrajani et al., 2017).
        lr_g: the generator's Adam learning rate.
        lr_d: the discriminator's Adam learning rate; None: the objective's paper default (`OBJECTIVE_DEFAULTS`):
            4e-4 for bce (D learns faster: the two time-scale update rule, Heusel et al., 2017), 1e-4 for wgan-gp.
        beta1: Adam's beta1 for both networks; None: the objective's paper default (0.5 bce, 0 wgan-gp).
        beta2: Adam's beta2 for both networks; None: the objective's paper default (0.999 bce, 0.9 wgan-gp).
        real_label: target for real images with "bce", in (0, 1] (0.9: one-sided label smoothing).
        gp_weight: weight of the gradient penalty with "wgan-gp" (lambda in the paper; unused by "bce").
        n_critic: discriminator steps per generator step; None: the objective's paper default (1 bce, 5 wgan-gp).

    DDP: each backward uses only one network's parameters, which plain DDP rejects (Lightning issue #20328); `setup`
    therefore switches on `find_unused_parameters` before the strategy wraps the model, so `--trainer.strategy ddp`
    works as it is.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, image_shape: Sequence[int], latent_dim: int,
                 objective: str = "bce", lr_g: float = 1e-4, lr_d: float | None = None, beta1: float | None = None,
                 beta2: float | None = None, real_label: float = 0.9, gp_weight: float = 10.0,
                 n_critic: int | None = None) -> None:
        super().__init__()
        settings = objective_settings(objective, lr_d=lr_d, beta1=beta1, beta2=beta2, n_critic=n_critic)
        if settings["n_critic"] < 1:
            raise ValueError(f"n_critic={n_critic} must be a positive integer (or None for the default)")
        if not 0.0 < real_label <= 1.0:
            raise ValueError(f"real_label={real_label} is invalid: the real target must be in (0, 1]")
        self.save_hyperparameters(ignore=["generator", "discriminator"])
        self.automatic_optimization = False  # two optimisers, stepped by hand (Lightning 2 has no optimizer_idx)
        self.generator, self.discriminator = generator, discriminator
        self.image_shape, self.latent_dim, self.objective = tuple(image_shape), latent_dim, objective
        self.lr_g, self.lr_d, self.betas = lr_g, settings["lr_d"], (settings["beta1"], settings["beta2"])
        self.real_label, self.gp_weight, self.n_critic = real_label, gp_weight, settings["n_critic"]

    # --- the protocol ---
    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return (self.generate(z) + 1) / 2

    def generate(self, z: Tensor) -> Tensor:
        """Fakes in [-1, 1], the space the discriminator works in."""
        return torch.tanh(self.generator(z))

    @staticmethod
    def signed(x: Tensor) -> Tensor:
        """Images in [0, 1] -> [-1, 1], the space the discriminator works in."""
        return x * 2 - 1

    @torch.no_grad()
    def sample(self, num_samples: int, y: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(num_samples, self.latent_dim, generator=generator)  # CPU noise: same images on any device
        return self.decode(z.to(self.device), y)

    # --- the objective ---
    def discriminator_terms(self, real: Tensor, fake: Tensor, penalty: bool = True) -> dict[str, Tensor]:
        """d_loss (with the gradient penalty for "wgan-gp" when `penalty`), d_real, d_fake and, for WGAN, gp."""
        real_out, fake_out = self.discriminator(real).float(), self.discriminator(fake).float()
        if self.objective == "bce":
            return {"d_loss": bce_discriminator_loss(real_out, fake_out, self.real_label),
                    **self.readout(real_out, fake_out)}
        terms = {"d_loss": wasserstein_critic_loss(real_out, fake_out), **self.readout(real_out, fake_out)}
        if penalty:
            terms["gp"] = gradient_penalty(self.discriminator, real, fake)
            terms["d_loss"] = terms["d_loss"] + self.gp_weight * terms["gp"]
        return terms

    def readout(self, real_out: Tensor, fake_out: Tensor) -> dict[str, Tensor]:
        """Mean D(real) and D(fake): probabilities for "bce", critic values for "wgan-gp"."""
        if self.objective == "bce":
            real_out, fake_out = torch.sigmoid(real_out), torch.sigmoid(fake_out)
        return {"d_real": real_out.mean(), "d_fake": fake_out.mean()}

    def generator_loss(self, fake: Tensor) -> Tensor:
        fake_out = self.discriminator(fake)
        return bce_generator_loss(fake_out) if self.objective == "bce" else wasserstein_generator_loss(fake_out)

    def check_shape(self, x: Tensor) -> None:
        check_batch_shape(self, x)

    # --- Lightning ---
    def setup(self, stage: str) -> None:
        # Runs before the strategy wraps the model in DistributedDataParallel, which reads these kwargs then.
        strategy = self.trainer.strategy if self._trainer is not None else None
        if isinstance(strategy, DDPStrategy) and not isinstance(strategy.model, DistributedDataParallel):
            strategy._ddp_kwargs["find_unused_parameters"] = True  # G's step leaves D's parameters unused, and back

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        real, _ = batch
        self.check_shape(real)
        real = self.signed(real)
        opt_g, opt_d = self.optimizers()
        generator_turn = batch_idx % self.n_critic == 0
        z = torch.randn(len(real), self.latent_dim, device=self.device)
        with torch.set_grad_enabled(generator_turn):  # no generator graph on critic-only steps
            fake = self.generate(z)

        with self.toggled_optimizer(opt_d):  # only D's parameters require grad in here
            terms = self.discriminator_terms(real, fake.detach())
            opt_d.zero_grad()
            self.manual_backward(terms["d_loss"])
            opt_d.step()

        if generator_turn:
            with self.toggled_optimizer(opt_g):  # D is frozen: g_loss's gradient reaches G only
                terms["g_loss"] = self.generator_loss(fake)
                opt_g.zero_grad()
                self.manual_backward(terms["g_loss"])
                opt_g.step()

        logged = {f"train/{name}": value.detach() for name, value in terms.items()}
        self.log_dict(logged, prog_bar=True, batch_size=len(real))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._held_out_step(batch, batch_idx, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._held_out_step(batch, batch_idx, "test")

    def _held_out_step(self, batch: Batch, batch_idx: int, stage: str) -> None:
        real, _ = batch
        self.check_shape(real)
        # Fixed noise per batch (and rank): the loss changes only because the networks do.
        noise = torch.Generator().manual_seed(batch_idx + 100_003 * self.global_rank)
        real_out = self.discriminator(self.signed(real)).float()
        fake_out = self.discriminator(self.signed(self.sample(len(real), generator=noise))).float()
        # Smoothing undone, no penalty: a divergence estimate (lower: fakes closer to data), not D's training loss.
        if self.objective == "bce":
            name, estimate = "js_estimate", js_estimate(real_out, fake_out, self.real_label)
        else:
            name, estimate = "wasserstein_estimate", -wasserstein_critic_loss(real_out, fake_out)
        terms = {"loss": estimate, name: estimate, **self.readout(real_out, fake_out)}
        self.log_dict({f"{stage}/{name}": value for name, value in terms.items()}, batch_size=len(real),
                      sync_dist=True)

    def predict_step(self, batch: Batch, batch_idx: int) -> None:
        """Nothing per batch: a GAN has no encoder; `genlab predict` draws its samples once per run."""

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.generator.parameters(), lr=self.lr_g, betas=self.betas),
                torch.optim.Adam(self.discriminator.parameters(), lr=self.lr_d, betas=self.betas)]


class GAN(Adversarial):
    """The course MLP GAN: G z -> 256 -> 512 -> 1024 -> image, D image -> 1024 -> 512 -> 256 -> 1, LeakyReLU(0.2),
    dropout in D. Objectives, learning rates and logging are those of `Adversarial`.

    Args:
        hidden: widths of the generator's hidden layers; the discriminator uses them reversed.
        dropout: dropout probability after each of D's hidden layers; None: the objective's paper default (0.3 for
            "bce", 0 for the "wgan-gp" critic).
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), latent_dim: int = 100,
                 hidden: Sequence[int] = (256, 512, 1024), dropout: float | None = None, objective: str = "bce",
                 lr_g: float = 1e-4, lr_d: float | None = None, beta1: float | None = None,
                 beta2: float | None = None, real_label: float = 0.9, gp_weight: float = 10.0,
                 n_critic: int | None = None) -> None:
        check_positive(image_shape=image_shape, latent_dim=latent_dim, hidden=hidden)
        dropout = objective_settings(objective, dropout=dropout)["dropout"]
        generator = MLPDecoder(latent_dim, image_shape, hidden, "leaky_relu")
        for layer in generator.modules():  # He init for LeakyReLU: PyTorch's default shrinks the signal about 3x per
            if isinstance(layer, nn.Linear):  # layer, so samples barely depended on z and G collapsed to one image
                nn.init.kaiming_normal_(layer.weight, a=0.2)
                nn.init.zeros_(layer.bias)
        super().__init__(generator, MLPDiscriminator(image_shape, hidden[::-1], dropout), image_shape, latent_dim,
                         objective, lr_g, lr_d, beta1, beta2, real_label, gp_weight, n_critic)


class DCGAN(Adversarial):
    """DCGAN (Radford et al., 2015) for square images: 64x64 and 32x32 (4x4 base), 28x28 (7x7 base), any even side.

    With "wgan-gp" the critic uses layer norm instead of batch norm.

    Args:
        width: channels of the layers next to the image (ngf/ndf in the paper), doubled at each halving of the side.
        attention_resolutions: feature-map sides after which a SAGAN self-attention block is inserted in the
            generator and the discriminator (Zhang et al., 2019; e.g. [16]; empty: none); identity at initialisation.
    """

    def __init__(self, image_shape: Sequence[int] = (3, 32, 32), latent_dim: int = 100, width: int = 64,
                 attention_resolutions: Sequence[int] = (), objective: str = "bce", lr_g: float = 1e-4,
                 lr_d: float | None = None, beta1: float | None = None, beta2: float | None = None,
                 real_label: float = 0.9, gp_weight: float = 10.0, n_critic: int | None = None) -> None:
        check_positive(image_shape=image_shape, latent_dim=latent_dim, width=width)
        norm = "layer" if objective == "wgan-gp" else "batch"
        super().__init__(DCGenerator(latent_dim, image_shape, width, attention_resolutions),
                         DCDiscriminator(image_shape, width, norm, attention_resolutions),
                         image_shape, latent_dim, objective, lr_g, lr_d, beta1, beta2, real_label, gp_weight,
                         n_critic)
