"""GANs: `Adversarial`, the one training loop (manual optimisation), and its presets `GAN` (MLP) and `DCGAN`.

Inside the adversarial game images live in [-1, 1], as in the papers: the generator ends in tanh and real images
are mapped by 2x - 1 before the discriminator sees them. `decode` and `sample` return (tanh + 1) / 2, in [0, 1] like
every datamodule's images. (A sigmoid generator against [0, 1] images is the same map on paper, but in practice its
saturating output let the course MLP's discriminator win within one MNIST epoch and the generator collapsed.)
Objectives: "bce" (Goodfellow et al., 2014, non-saturating, one-sided label smoothing) or "wgan-gp" (Gulrajani et
al., 2017: a critic without sigmoid, batch norm or dropout, gradient penalty, `n_critic` critic steps per generator
step). Settings left at None take the objective's defaults, `OBJECTIVE_DEFAULTS`. The networks are in `gan_nets`.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .blocks import MLPDecoder, check_batch_shape, check_positive
from .gan_losses import (OBJECTIVES, bce_discriminator_loss, bce_generator_loss, gradient_penalty, js_estimate,
                         wasserstein_critic_loss, wasserstein_generator_loss)
from .gan_nets import DCDiscriminator, DCGenerator, MLPDiscriminator, dcgan_depth
from .module import GenerativeModule, adam, allow_unused_parameters

__all__ = ["DCGAN", "GAN", "Adversarial", "DCDiscriminator", "DCGenerator", "MLPDiscriminator", "dcgan_depth",
           "objective_settings"]

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


class Adversarial(GenerativeModule):
    """Generator vs discriminator, trained by manual optimisation: D (or the critic) steps on every batch, G on
    every `n_critic`-th.

    `loss(x)` and the training log: `d_loss`, `g_loss`, `d_real`, `d_fake` (mean D probability for "bce", mean
    critic value for "wgan-gp"), `gp` for "wgan-gp", and `loss` = d_loss + g_loss, a total to watch (each player
    minimises only its own term; on critic-only steps g_loss is the last generator step's). On held-out real
    images and fresh fakes from fixed noise, the current D's divergence estimate, under its name and as `val/loss`
    (for checkpointing, lower is better):
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
        self._held_out_batch = 0  # seeds the held-out noise: batch index within the epoch

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
    def sample(self, num_samples: int, y: Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        """Images from z ~ N(0, temperature^2 I) (the truncation-style trade of fidelity for variety)."""
        z = temperature * torch.randn(num_samples, self.latent_dim, generator=generator)  # CPU noise: any device
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

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Both players' terms on real images `x` in [0, 1] and as many fresh fakes, nothing stepped; "loss" is
        d_loss + g_loss. The gradient penalty needs gradients: without them (`torch.no_grad`) d_loss leaves it out."""
        self.check_shape(x)
        fake = self.generate(torch.randn(len(x), self.latent_dim, device=self.device))
        terms = self.discriminator_terms(self.signed(x), fake.detach(), penalty=torch.is_grad_enabled())
        terms["g_loss"] = self.generator_loss(fake)
        return {"loss": terms["d_loss"] + terms["g_loss"], **terms}

    # --- Lightning ---
    def setup(self, stage: str) -> None:
        allow_unused_parameters(self)  # G's step leaves D's parameters unused, and back

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        real, _ = batch
        self.check_shape(real)
        real = self.signed(real)
        opt_g, opt_d = self.optimizers()
        generator_turn = batch_idx % self.n_critic == 0
        last_g_loss = self.last_terms.get("g_loss")
        z = torch.randn(len(real), self.latent_dim, device=self.device)
        with torch.set_grad_enabled(generator_turn):  # no generator graph on critic-only steps
            fake = self.generate(z)

        with self.toggled_optimizer(opt_d):  # only D's parameters require grad in here
            terms = self.discriminator_terms(real, fake.detach())
            self.manual_step(opt_d, terms, "d_loss")

        if generator_turn:
            with self.toggled_optimizer(opt_g):  # D is frozen: g_loss's gradient reaches G only
                terms["g_loss"] = self.generator_loss(fake)
                self.manual_step(opt_g, terms, "g_loss")
        elif last_g_loss is not None:
            terms["g_loss"] = last_g_loss
        self.log_terms("train", {"loss": terms["d_loss"] + terms.get("g_loss", 0.0), **terms}, len(real))

    def on_validation_epoch_start(self) -> None:
        self._held_out_batch = 0

    def on_test_epoch_start(self) -> None:
        self._held_out_batch = 0

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        """Held-out (validation, test): the divergence estimate on real images and fakes from fixed noise."""
        real, _ = batch
        self.check_shape(real)
        # Fixed noise per batch (and rank): the loss changes only because the networks do.
        noise = torch.Generator().manual_seed(self._held_out_batch + 100_003 * self.global_rank)
        self._held_out_batch += 1
        real_out = self.discriminator(self.signed(real)).float()
        fake_out = self.discriminator(self.signed(self.sample(len(real), generator=noise))).float()
        # Smoothing undone, no penalty: a divergence estimate (lower: fakes closer to data), not D's training loss.
        if self.objective == "bce":
            name, estimate = "js_estimate", js_estimate(real_out, fake_out, self.real_label)
        else:
            name, estimate = "wasserstein_estimate", -wasserstein_critic_loss(real_out, fake_out)
        terms = {"loss": estimate, name: estimate, **self.readout(real_out, fake_out)}
        self.log_terms(stage, terms, len(real))
        return estimate

    def predict_step(self, batch: Batch, batch_idx: int) -> None:
        """Nothing per batch: a GAN has no encoder; `genlab predict` draws its samples once per run."""

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [adam(self.generator.parameters(), lr=self.lr_g, betas=self.betas),
                adam(self.discriminator.parameters(), lr=self.lr_d, betas=self.betas)]


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
