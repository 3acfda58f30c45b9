"""`EncoderDecoder`: the one training loop for every encoder -> bottleneck -> decoder model, and `Autoencoder`, the
same with a prior to sample from."""

from collections.abc import Sequence

import math

import torch
from torch import Tensor, nn

from .blocks import check_batch_shape
from .bottlenecks import Bottleneck
from .losses import (SUPPORT, check_likelihood, data_support, likelihood_mean, support_covers,
                     reconstruction_nll_per_image)
from .module import GenerativeModule, adam

Batch = tuple[Tensor, Tensor]


class EncoderDecoder(GenerativeModule):
    """Encoder -> bottleneck -> decoder, trained on the reconstruction term plus the bottleneck's weighted terms.
    It has no `sample`: a model whose bottleneck has a prior is an `Autoencoder`; a VQ-VAE, whose codes have none
    until a `CodePrior` is fitted, is not a sampler.

    `loss(x)` returns the named, unweighted terms in nats per image (summed over data or latent dimensions,
    averaged over the batch) and their weighted sum under "loss", the optimised objective. `recon` is -log p(x|z)
    when the likelihood is normalised for x (Bernoulli: binary x only; on grey or colour x it is a cross-entropy,
    not a likelihood). Every term is logged as `train/<name>`, `val/<name>` and `test/<name>`; validation and test
    add the per-pixel `mse` and, for a model with a KL term whose likelihood is normalised for the batch,
    `neg_elbo` = recon + kl: the true negative ELBO (beta 1, no free-bits floor, no warm-up), which `loss` is only
    when beta = 1, free_bits = 0 and tc_weight = 1.

    The Args from `latent_dim` on are the presets' (`genlab.models.presets`, `VQVAE`), described here once for all.

    Args:
        encoder: network images (B, C, H, W) -> features (B, bottleneck.in_features); `net(x, c)` if conditional.
        bottleneck: a `Bottleneck`, features -> (z, named terms), e.g. `GaussianBottleneck` (VAE) or
            `IdentityBottleneck` (AE).
        decoder: network z (B, latent_dim) -> likelihood parameters (B, output_channels, H, W).
        image_shape: (C, H, W) of the data, checked against every batch; the CLI links it from the datamodule.
        likelihood: p(x|z), one of `losses.LIKELIHOODS`: "bernoulli" (binary data; a cross-entropy on grey) |
            "gaussian" (fixed `sigma`) | "gaussian_learned" (sigma learned per data dimension) |
            "discretized_gaussian" | "logistic_mixture" (exact pmfs of 8-bit data).
        sigma: standard deviation of the Gaussian likelihoods, in [0, 1] pixel units (initial value if learned).
        lr: Adam learning rate.
        conditioner: optional `forward(x, y) -> c`; c is passed to encoder and decoder as `net(input, c)` (CVAE).
            A conditioner of kind "image" (the quarter CVAE) gives part of x: only the rest is scored, so `recon`
            and the likelihood are -log p(x_unseen | z, x_given) (Sohn et al., 2015).
        corruption: optional `forward(x, generator) -> x_tilde` applied to the encoder's input in `loss`; the
            target stays the clean x. With one the model is a `Denoiser` (protocols); without, `corruption` is
            None and it is not.
        latent_dim: dimension of the latent code z.
        hidden: widths of the fully connected encoder's hidden layers; the decoder uses them reversed.
        widths: channels of the conv layers, one halving of H and W each; the decoder mirrors them.
        batch_norm: batch norm after every conv layer but the decoder's last.
        attention_resolutions: feature-map heights after which a SAGAN self-attention block is inserted in the
            conv encoder and decoder (e.g. [16]; empty: none); each block is the identity at initialisation.
        beta: weight of the KL term (beta-VAE; 1 is the ELBO).
        free_bits: floor on the optimised KL, in nats per latent dimension (batch mean); 0 switches it off.
        kl_warmup_steps: optimiser steps over which the KL weight rises from 0 to `beta`; 0: no warm-up.
        kl_cycles: number of warm-up cycles within `kl_warmup_steps` (cyclical annealing; 1: plain warm-up).
        kl_cycle_ratio: share of each cycle, in (0, 1], over which the weight rises; it stays at `beta` after.
        tc_weight: weight of the total correlation of q(z) (beta-TCVAE's beta; the objective adds tc_weight - 1 times
            the logged `tc`); 1 is the plain VAE, >= 0 allowed, only 1 with flows.
        mixture_components: K, the logistics per channel of "logistic_mixture" (ignored by other likelihoods).
        condition: what the model is conditioned on: "label" (one-hot class) | "quarter" (lower-left quarter of
            the image) | "none" (unconditional; not for BaselineNN).
        num_classes: number of classes for condition "label"; the CLI links it from the datamodule.
    """

    def __init__(self, encoder: nn.Module, bottleneck: Bottleneck, decoder: nn.Module,
                 image_shape: Sequence[int], likelihood: str = "bernoulli", sigma: float = 1.0,
                 lr: float = 1e-3, conditioner: nn.Module | None = None, corruption: nn.Module | None = None) -> None:
        super().__init__()
        check_likelihood(likelihood)
        if sigma <= 0 or lr <= 0:
            raise ValueError(f"sigma={sigma} and lr={lr} must both be positive")
        # Modules are not hyperparameters: presets record their primitive arguments instead.
        self.save_hyperparameters(ignore=["encoder", "bottleneck", "decoder", "conditioner", "corruption"])
        self.encoder, self.bottleneck, self.decoder = encoder, bottleneck, decoder
        self.conditioner, self.corruption = conditioner, corruption
        # Base classes read attributes, never self.hparams (under LightningCLI hparams is the leaf's config).
        self.image_shape, self.likelihood, self.sigma, self.lr = tuple(image_shape), likelihood, sigma, lr
        self.latent_dim: int = bottleneck.latent_dim
        self.log_sigma = nn.Parameter(torch.full(self.image_shape, math.log(sigma))) \
            if likelihood == "gaussian_learned" else None
        # 1 where x is scored; None: everywhere. Derived from the conditioner, so not saved in checkpoints.
        scored = None if self.condition_kind != "image" else 1.0 - conditioner.mask(self.image_shape)
        self.register_buffer("scored", scored, persistent=False)

    # --- hooks: condition and corruption ---
    @property
    def condition_kind(self) -> str | None:
        """What `decode`/`sample` need as y: "label", "image", or None for an unconditional model."""
        return None if self.conditioner is None else self.conditioner.kind

    def condition(self, x: Tensor | None, y: Tensor | None) -> Tensor | None:
        """The vector c (B, features) both networks see, from images x and/or labels y; None if unconditional."""
        return None if self.conditioner is None else self.conditioner(x, y)

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The encoder's training input: x itself, or `corruption(x)` for a denoising model."""
        return x if self.corruption is None else self.corruption(x, generator)

    def _encode_features(self, x: Tensor, c: Tensor | None) -> Tensor:
        # unconditional encoders are called with x alone, so any (x) -> h module can be plugged in
        return self.encoder(x) if c is None else self.encoder(x, c)

    def _features(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Encoder features h of the clean x and the condition c they were computed with."""
        c = self.condition(x, y)
        return self._encode_features(x, c), c

    def _decode_logits(self, z: Tensor, c: Tensor | None) -> Tensor:
        if c is None:
            return self.decoder(z)
        if len(c) != len(z):  # one condition for many draws: different completions of the same condition
            if len(c) != 1:
                raise ValueError(f"got {len(c)} conditions for {len(z)} latents; pass 1 or {len(z)}")
            c = c.expand(len(z), -1)
        return self.decoder(z, c.to(z.device))

    # --- the protocol (genlab.models.protocols) ---
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.bottleneck.encode(self._features(x, y)[0])

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Images in [0, 1]; conditional models read the condition from y (labels, or images for "quarter", whose
        given region is returned as given: only the rest is generated)."""
        return self._complete(self._mean(self._decode_logits(z, self.condition(None, y))), y)

    def reconstruct(self, x: Tensor, y: Tensor | None = None, stochastic: bool = False,
                    generator: torch.Generator | None = None) -> Tensor:
        """decode(encode(x)); with `stochastic=True`, decodes a fresh draw z ~ q(z|x) instead of its mean, so
        repeated calls show the posterior's spread (the same image for deterministic bottlenecks: AE, VQ)."""
        h, c = self._features(x, y)
        z = self.bottleneck.sample_posterior(h, generator) if stochastic else self.bottleneck.encode(h)
        return self._complete(self._mean(self._decode_logits(z, c)), x)

    @property
    def has_kl_per_dim(self) -> bool:
        """Whether `kl_per_dim` applies (genlab.models.protocols.KLPerDimension): the bottleneck says."""
        return self.bottleneck.has_kl_per_dim

    def kl_per_dim(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Batch-mean KL of each latent dimension, (latent_dim,): e.g. to order traversal rows."""
        if not self.has_kl_per_dim:
            raise TypeError(f"{type(self).__name__} has a {type(self.bottleneck).__name__}, which has no KL term "
                            f"per latent dimension")
        return self.bottleneck.kl_per_dim(self._features(x, y)[0])

    # --- likelihood (genlab.models.protocols.LikelihoodModel) ---
    def _mean(self, out: Tensor) -> Tensor:
        """Images in [0, 1] from the decoder output (decoders emit logits or likelihood parameters)."""
        return likelihood_mean(out, self.likelihood, self.image_shape[0])

    def _complete(self, images: Tensor, source: Tensor | None) -> Tensor:
        """The decoder's images, with the region given by an image condition copied from `source` (B or 1, C, H, W)."""
        if self.scored is None:
            return images
        return images * self.scored + source.to(images) * (1.0 - self.scored)

    def _nll_per_image(self, out: Tensor, x: Tensor) -> Tensor:
        """-log p(x|z) of each image over the scored dimensions, with the fixed or the learned sigma."""
        sigma = self.sigma if self.log_sigma is None else self.log_sigma.exp()
        return reconstruction_nll_per_image(out, x, self.likelihood, sigma, self.scored)

    @property
    def likelihood_support(self) -> str:
        """Data p(x|z) is normalised for: "binary", "8bit" (a pmf over 256 levels) or "continuous" (a density)."""
        return SUPPORT[self.likelihood]

    @property
    def likelihood_description(self) -> str:
        """One line saying which p(x|z) the numbers used, sigma included: for test_metrics.json."""
        if self.likelihood == "gaussian":
            return f"gaussian, fixed sigma={self.sigma:g}: a density on R^D"
        if self.likelihood == "gaussian_learned":
            sigma = self.log_sigma.detach().exp()
            return (f"gaussian, sigma learned per data dimension (mean {sigma.mean():.4g}, min {sigma.min():.4g}, "
                    f"max {sigma.max():.4g}): a density on R^D")
        if self.likelihood_support == "8bit":
            return f"{self.likelihood}: a discrete pmf over the 256 levels of 8-bit data, exact"
        return "bernoulli: a pmf over binary pixels"

    @property
    def has_likelihood(self) -> bool:
        """Whether `log_importance_weights` applies: a stochastic bottleneck with a density q(z|x) (VAE, flow VAE)."""
        return self.bottleneck.has_density

    def log_importance_weights(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                               generator: torch.Generator | None = None) -> Tensor:
        """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) for z_i ~ q(z|x), (num_samples, B), nats per image.

        logsumexp over i minus log k is the IWAE bound on log p(x) (Burda et al., 2016); the mean over i estimates
        the ELBO. Memory grows with num_samples * B decodes: callers chunk k (see `genlab.metrics.likelihood`).
        """
        if not self.has_likelihood:
            raise TypeError(f"{type(self).__name__} has a {type(self.bottleneck).__name__}, which has no density "
                            f"q(z|x): importance-weighted likelihoods need a Gaussian or flow bottleneck")
        self.check_shape(x)
        h, c = self._features(x, y)
        z, log_q = self.bottleneck.sample_with_log_prob(h, num_samples, generator)  # (k, B, L), (k, B)
        k, batch = log_q.shape
        flat_c = None if c is None else c.expand(k, *c.shape).reshape(k * batch, -1)
        logits = self._decode_logits(z.reshape(k * batch, -1), flat_c)
        targets = x.expand(k, *x.shape).reshape(k * batch, *x.shape[1:])
        log_px_z = -self._nll_per_image(logits, targets).reshape(k, batch)
        return log_px_z + self.bottleneck.prior_log_prob(z) - log_q

    # --- the objective ---
    def term_weights(self) -> dict[str, float]:
        """Weight of each objective term now: scheduled by `global_step` while training (so resuming restores the
        schedule), the final values in evaluation so that val/loss is comparable between epochs."""
        return self.bottleneck.weights_at(self.global_step if self.training else None)

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Named, unweighted terms (nats per image) plus their weighted sum under "loss"."""
        return self._objective(x, y, self.term_weights())[0]

    def _objective(self, x: Tensor, y: Tensor | None, weights: dict[str, float],
                   reconstruct: bool = False) -> tuple[dict[str, Tensor], Tensor | None]:
        """`loss`'s terms under `weights`, and with `reconstruct` the deterministic reconstruction of x (what
        `reconstruct(x, y)` returns) from the same encoder pass and one decoder call: z and the code are decoded
        together (once, when the bottleneck is deterministic). A corrupted input needs its own pass for the clean x."""
        self.check_shape(x)
        c = self.condition(x, y)
        h = self._encode_features(self.corrupt(x), c)
        z, terms = self.bottleneck(h)
        both = reconstruct and self.corruption is None and self.bottleneck.stochastic
        if both:
            z = torch.cat([z, self.bottleneck.encode(h).to(z.dtype)])
            c = None if c is None else torch.cat([c, c])
        out = self._decode_logits(z, c)
        recon = self._nll_per_image(out[:len(x)], x).mean()
        # Terms without a weight (e.g. codebook perplexity, log_det) are diagnostics: logged, never optimised.
        total = recon + sum(weight * terms[name] for name, weight in weights.items())
        images = None
        if reconstruct:
            images = self.reconstruct(x, y) if self.corruption is not None else \
                self._complete(self._mean(out[len(x):] if both else out), x)
        return {"loss": total, "recon": recon, **terms}, images

    def check_shape(self, x: Tensor) -> None:
        check_batch_shape(self, x)

    # --- Lightning ---
    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y = batch
        return self.reconstruct(x, y)

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        """One forward pass; its terms logged as `<stage>/<term>` (tensors: no host sync), in evaluation with the
        per-pixel `mse` of the deterministic reconstruction and `neg_elbo`, in training with the `kl_weight` used."""
        x, y = batch
        weights = self.term_weights()  # the schedule, evaluated once per step
        evaluating = stage != "train"
        terms, images = self._objective(x, y, weights, reconstruct=evaluating)
        extra = {}
        if not evaluating and self.bottleneck.kl_term is not None:
            extra["train/kl_weight"] = weights[self.bottleneck.kl_term]
        if evaluating:  # the per-pixel MSE courses quote, of the images `reconstruct` returns
            extra[f"{stage}/mse"] = (images.detach() - x).pow(2).mean()
            if "kl" in terms and support_covers(self.likelihood_support, data_support(x)):
                extra[f"{stage}/neg_elbo"] = (terms["recon"] + terms["kl"]).detach()
        self.log_terms(stage, terms, len(x), extra)
        return terms["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self.parameters(), lr=self.lr)


class Autoencoder(EncoderDecoder):
    """`EncoderDecoder` whose bottleneck has a prior (N(0, I), nominal for an AE, or a learned one): a `Sampler`."""

    @torch.no_grad()
    def sample(self, num_samples: int, y: Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        """Decode draws from the prior, its standard deviation scaled by `temperature` (20x variance: sqrt(20)).

        Conditional models need y: 1 condition (all samples share it) or `num_samples` of them.
        """
        z = self.bottleneck.sample_prior(num_samples, generator, temperature)  # CPU noise: same grid on any device
        return self.decode(z.to(self.device), y)
