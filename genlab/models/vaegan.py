"""`VAEGAN`: `ConvVAE` plus a PatchGAN discriminator, trained by manual optimisation (Larsen et al., 2016; Esser et al.,
2021). The VAE part is ConvVAE's modules and likelihood unchanged, so encode/decode/sample/reconstruct, the ELBO,
`genlab test`'s likelihoods and every figure work as for ConvVAE."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .patchgan import PatchDiscriminator, hinge_discriminator_loss, hinge_generator_loss, patch_sizes
from .module import adam, allow_unused_parameters
from .presets import ConvVAE

Batch = tuple[Tensor, Tensor]
OPTIMIZERS_PER_BATCH = 2  # Lightning's global_step counts every optimiser step: D's and the generator's
ADAPTIVE_EPS = 1e-4  # Esser et al.'s delta in lambda = |grad rec| / (|grad g_loss| + delta)


class VAEGAN(ConvVAE):
    """ConvVAE whose decoder is also trained against a PatchGAN discriminator D with the hinge loss.

    Every batch: D steps on real images against fakes (reconstructions from z ~ q(z|x) and samples from z ~ p(z), as
    in Larsen et al.), then the encoder and decoder step on
    `pixel_weight * recon + feature_weight * feature_match + kl weight * kl + g_weight * g_loss`, where
    - `recon`, `kl`: the VAE's terms (nats per image, ELBO parts reported as for ConvVAE);
    - `feature_match`: 0.5 ||f(x) - f(x~)||^2 summed over D's last hidden layer f, batch mean: the Gaussian
      -log p of Larsen et al.'s feature-space reconstruction, up to its constant;
    - `g_loss`: the hinge generator loss -E D(fake), a mean over patches and fakes;
    - `g_weight` = disc_weight * adaptive_weight after `disc_start` batches, 0 before (D trains from the start);
      `adaptive_weight` = ||grad_W rec|| / (||grad_W g_loss|| + 1e-4), clamped to [0, max_adaptive_weight] and
      detached, W the decoder's last layer, rec = the two reconstruction terms (Esser et al., 2021, eq. 7).
    Training also logs `d_loss` and the mean patch logits `d_real`, `d_fake`. Validation and test are ConvVAE's:
    `val/loss` is recon + beta kl, with `mse` and, where the likelihood is normalised for the data, `neg_elbo`.
    `loss(x)` returns the generator's terms above (in evaluation mode with the final weights: beta, adversarial on).
    Schedules (`disc_start`, the KL warm-up) count batches: Lightning's `global_step` (and `max_steps`) counts both
    optimisers' steps, two per batch. DDP: every rank runs the same operations (lambda is each rank's own; the
    averaged update is the same everywhere); `setup` switches on `find_unused_parameters` since each backward
    reaches one network only, as for `Adversarial`.

    Args:
        disc_width: channels of D's first conv layer, doubled at each further layer (at most 8x).
        disc_layers: strided conv layers of D, each halving H and W (PatchGAN's n_layers); more: larger patches.
        disc_start: training batches before the adversarial term switches on (D trains from the first batch).
        disc_weight: factor on the adaptive weight of the generator's hinge term (0: no adversarial term).
        feature_weight: weight of the feature matching term on D's last hidden layer (0: off).
        pixel_weight: weight of the pixel likelihood term `recon` in the generator's objective (0: only Larsen et
            al.'s reconstruction in feature space; `recon` is then still reported).
        max_adaptive_weight: upper clamp of the adaptive weight (1e4 as in VQGAN).
        lr_d: Adam learning rate of the discriminator (the generator uses `lr`).
        beta1: Adam's beta1 for both networks (0.5 as in VQGAN).
        beta2: Adam's beta2 for both networks (0.9 as in VQGAN).
    """

    def __init__(self, image_shape: Sequence[int] = (3, 32, 32), latent_dim: int = 128,
                 widths: Sequence[int] = (32, 64, 128), batch_norm: bool = False,
                 attention_resolutions: Sequence[int] = (), beta: float = 1.0, free_bits: float = 0.0,
                 kl_warmup_steps: int = 0, kl_cycles: int = 1, kl_cycle_ratio: float = 1.0,
                 likelihood: str = "bernoulli", sigma: float = 1.0, mixture_components: int = 10, lr: float = 1e-3,
                 architecture: str = "conv", disc_width: int = 32, disc_layers: int = 2, disc_start: int = 500,
                 disc_weight: float = 0.5, feature_weight: float = 1.0, pixel_weight: float = 1.0,
                 max_adaptive_weight: float = 1e4, lr_d: float = 1e-3, beta1: float = 0.5, beta2: float = 0.9) -> None:
        super().__init__(image_shape=image_shape, latent_dim=latent_dim, widths=widths, batch_norm=batch_norm,
                         attention_resolutions=attention_resolutions, beta=beta, free_bits=free_bits,
                         kl_warmup_steps=kl_warmup_steps, kl_cycles=kl_cycles, kl_cycle_ratio=kl_cycle_ratio,
                         likelihood=likelihood, sigma=sigma, mixture_components=mixture_components, lr=lr,
                         architecture=architecture)
        weights = dict(disc_weight=disc_weight, feature_weight=feature_weight, pixel_weight=pixel_weight,
                       max_adaptive_weight=max_adaptive_weight)
        if disc_start < 0 or any(value < 0 for value in weights.values()):
            raise ValueError(f"disc_start={disc_start} and {weights} must all be >= 0")
        if lr_d <= 0 or not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"lr_d={lr_d} must be positive and beta1={beta1}, beta2={beta2} in [0, 1)")
        patch_sizes(image_shape, disc_layers)  # a clear error where D would be too deep for the images
        self.automatic_optimization = False  # two optimisers, stepped by hand
        self.discriminator = PatchDiscriminator(image_shape[0], disc_width, disc_layers)
        self.disc_start, self.disc_weight, self.feature_weight = disc_start, disc_weight, feature_weight
        self.pixel_weight, self.max_adaptive_weight = pixel_weight, max_adaptive_weight
        self.lr_d, self.betas = lr_d, (beta1, beta2)

    # --- schedules, in batches ---
    @property
    def batches_done(self) -> int:
        """Training batches so far (restored on resume): Lightning's global_step counts two optimiser steps each."""
        return self.global_step // OPTIMIZERS_PER_BATCH

    def term_weights(self) -> dict[str, float]:
        return self.bottleneck.weights_at(self.batches_done if self.training else None)

    def adversarial_factor(self) -> float:
        """1 once `disc_start` batches are done (and in evaluation, like the KL weight), else 0."""
        return float(not self.training or self.batches_done >= self.disc_start)

    # --- the objective ---
    @staticmethod
    def signed(x: Tensor) -> Tensor:
        """Images in [0, 1] -> [-1, 1], the space D works in."""
        return x * 2 - 1

    @property
    def last_layer(self) -> Tensor:
        """The weight of the decoder's last layer, where the adaptive weight compares gradients."""
        return [m for m in self.decoder.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))][-1] \
            .weight

    def _vae_pass(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The VAE's terms for x and the fakes D judges, (2B, C, H, W) in [-1, 1]: the decoded z ~ q(z|x), then the
        decoded z ~ p(z)."""
        z, terms = self.bottleneck(self.encoder(x))
        out = self.decoder(z)
        prior_z = self.bottleneck.sample_prior(len(x)).to(device=z.device, dtype=z.dtype)  # z ~ p(z)
        fakes = torch.cat([self._mean(out), self._mean(self.decoder(prior_z))])
        return {"recon": self._nll_per_image(out, x).mean(), **terms}, self.signed(fakes)

    def adaptive_weight(self, reconstruction: Tensor, g_loss: Tensor) -> Tensor:
        """Esser et al.'s lambda: the gradient-norm ratio at the decoder's last layer, clamped and detached."""
        layer = self.last_layer
        (rec_grad,) = torch.autograd.grad(reconstruction, layer, retain_graph=True)
        (g_grad,) = torch.autograd.grad(g_loss, layer, retain_graph=True)
        ratio = rec_grad.float().norm() / (g_grad.float().norm() + ADAPTIVE_EPS)
        return ratio.clamp(0.0, self.max_adaptive_weight).detach()

    def _generator_terms(self, x: Tensor, terms: dict[str, Tensor], fakes: Tensor,
                         weights: dict[str, float], adversarial: float) -> dict[str, Tensor]:
        with torch.no_grad():  # the targets of feature matching: D's features of the real images
            real_features = self.discriminator.features(self.signed(x)).float()
        fake_features = self.discriminator.features(fakes)
        terms["feature_match"] = 0.5 * (fake_features[:len(x)].float() - real_features).pow(2).flatten(1).sum(1).mean()
        terms["g_loss"] = hinge_generator_loss(self.discriminator.head(fake_features))
        reconstruction = self.pixel_weight * terms["recon"] + self.feature_weight * terms["feature_match"]
        terms["adaptive_weight"] = self.adaptive_weight(reconstruction, terms["g_loss"])
        terms["g_weight"] = adversarial * self.disc_weight * terms["adaptive_weight"]
        kl = sum(weight * terms[name] for name, weight in weights.items())
        return {"loss": reconstruction + kl + terms["g_weight"] * terms["g_loss"], **terms}

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """The generator's named terms (recon, kl, feature_match, g_loss, adaptive_weight, g_weight) and "loss"; the
        adaptive weight needs gradients, so they are on in here even under `torch.no_grad` or `inference_mode`
        (Lightning's test loop)."""
        self.check_shape(x)
        with torch.inference_mode(False), torch.enable_grad():
            x = x.clone()  # an inference-mode tensor cannot be saved for backward; its clone out here can
            terms, fakes = self._vae_pass(x)
            return self._generator_terms(x, terms, fakes, self.term_weights(), self.adversarial_factor())

    def discriminator_terms(self, real: Tensor, fakes: Tensor) -> dict[str, Tensor]:
        """`d_loss` (hinge) on real images and fakes in [-1, 1], and the mean patch logits `d_real`, `d_fake`."""
        logits = self.discriminator(torch.cat([real, fakes])).float()  # per-image norm: one pass is two passes
        real_logits, fake_logits = logits[:len(real)], logits[len(real):]
        return {"d_loss": hinge_discriminator_loss(real_logits, fake_logits), "d_real": real_logits.mean(),
                "d_fake": fake_logits.mean()}

    # --- Lightning ---
    def setup(self, stage: str) -> None:
        allow_unused_parameters(self)  # D's step leaves the VAE's parameters unused

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        x, _ = batch
        self.check_shape(x)
        opt_g, opt_d = self.optimizers()
        weights, adversarial = self.term_weights(), self.adversarial_factor()
        terms, fakes = self._vae_pass(x)  # the generator's graph, built once for both steps

        with self.toggled_optimizer(opt_d):  # only D's parameters require grad in here
            d_terms = self.discriminator_terms(self.signed(x), fakes.detach())
            self.manual_step(opt_d, d_terms, "d_loss")

        with self.toggled_optimizer(opt_g):  # D is frozen: its terms' gradients reach the encoder and decoder only
            terms = self._generator_terms(x, terms, fakes, weights, adversarial)
            self.manual_step(opt_g, terms, "loss")

        self.log_terms("train", {**terms, **d_terms}, len(x), {"train/kl_weight": weights[self.bottleneck.kl_term]})

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        generator = [p for name, p in self.named_parameters() if not name.startswith("discriminator.")]
        return [adam(generator, lr=self.lr, betas=self.betas),
                adam(self.discriminator.parameters(), lr=self.lr_d, betas=self.betas)]
