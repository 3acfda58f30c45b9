"""`HierarchicalVAE`: a top-down hierarchy of latent groups (Ladder VAE, Sønderby et al., 2016; VDVAE, Child, 2021).

A bottom-up pass of residual cells gives features at every resolution. The top-down pass starts from a learned
constant at the coarsest resolution and meets the groups coarsest first, z_0 (the top) ... z_{G-1}: each holds a
prior p(z_l | z_<l) read from the top-down state h and a posterior q(z_l | x, z_<l) read from h and the bottom-up
features at its resolution (VDVAE's parameterisation: both share the top-down path). z_l enters h through a 1x1
conv, then a residual cell. The top group's prior is N(0, I), so `encode` (z_0's posterior mean, flattened) lives
where the figures that draw codes from N(0, I) expect it. The networks are in `ladder`.
"""

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .blocks import check_batch_shape, check_positive
from .ladder import Gaussian, LadderNetwork, gaussian_from, gaussian_kl_between, gaussian_log_prob
from .losses import (SUPPORT, check_likelihood, data_support, free_bits_kl, gaussian_kl, kl_annealing,
                     likelihood_mean, output_channels, reconstruction_nll_per_image, support_covers)
from .module import GenerativeModule, adam

__all__ = ["HierarchicalVAE"]

Batch = tuple[Tensor, Tensor]
SPIKE_WARMUP = 100  # updates before any is skipped: the mean gradient norm must be known first


def _noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, I) noise shaped like `like`: from `generator` on the CPU (same draws on any device), else on the device."""
    if generator is None:
        return torch.randn_like(like)
    return torch.randn(like.shape, generator=generator).to(like)


class HierarchicalVAE(GenerativeModule):
    """Ladder/VDVAE-style VAE: G latent groups, the KL of group l logged as `kl_<l>` (l = 0 the top) and summed into
    `kl`; the objective is recon + beta * warm-up(step) * KL, with the free-bits floor applied per group.

    Training: gradients are clipped to `grad_clip` and a step whose norm spikes (`skip_factor`) is skipped (the
    count is logged as `skipped_updates`; NaN/Inf gradients are stopped earlier by the CLI's NonFiniteGuard). An EMA
    of the weights (`ema`, saved in the checkpoint) is what the model uses in eval mode: validation, test, figures.
    `encode` gives z_0's posterior mean (B, latent_dim); `decode(z_0)` fills the lower groups with their prior means;
    `reconstruct` uses every group's posterior mean; `sample` draws every group, `temperature` one value or one per
    group.

    Args:
        image_shape: (C, H, W) of the data, checked against every batch; the CLI links it from the datamodule.
        resolutions: height of each latent group's feature map, coarsest (the top group) first, each one of H's
            ceil-halvings (MNIST: 28, 14, 7, 4, 2, 1); a repeated height adds another group at that resolution.
            Both passes start at the finest group's map, the image read and written as patches where that map
            tiles it (`ladder.LadderNetwork`): all groups at 1 make a dense ladder, the Ladder VAE's MLP setting.
        latent_channels: channels of every group's z (z_l is latent_channels x h_l x w_l).
        width: channels of the residual stream of both passes.
        cells: residual cells per resolution in each pass.
        likelihood: p(x|z), one of "bernoulli" | "gaussian" | "gaussian_learned" | "discretized_gaussian" |
            "logistic_mixture" (`losses.LIKELIHOODS`).
        sigma: standard deviation of the Gaussian likelihoods, in [0, 1] pixel units (initial value if learned).
        mixture_components: K, the logistics per channel of "logistic_mixture".
        beta: weight of the KL term (1 is the ELBO).
        free_bits: floor on each group's optimised KL (batch mean), in nats per latent dimension of the group;
            0 switches it off.
        kl_warmup_steps: optimiser steps over which the KL weight rises linearly from 0 to `beta`; 0: none.
        lr: Adam learning rate.
        grad_clip: clip the gradients' global 2-norm to this; 0: no clipping.
        skip_factor: skip the update when the gradient norm (before clipping) exceeds skip_factor times the running
            mean norm of the updates applied (after the first 100); 0: never skip. Relative, because the norm's
            scale depends on the data (at init: ~300 on binary MNIST, ~3000-9000 on 8-bit CIFAR).
        ema_rate: decay of the exponential moving average of the weights (0: the EMA is the current weights).
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), resolutions: Sequence[int] = (7, 14),
                 latent_channels: int = 8, width: int = 64, cells: int = 1, likelihood: str = "bernoulli",
                 sigma: float = 1.0, mixture_components: int = 10, beta: float = 1.0, free_bits: float = 0.0,
                 kl_warmup_steps: int = 0, lr: float = 1e-3, grad_clip: float = 200.0,
                 skip_factor: float = 10.0, ema_rate: float = 0.999) -> None:
        super().__init__()
        check_positive(image_shape=image_shape, resolutions=resolutions, latent_channels=latent_channels,
                       width=width, cells=cells)
        check_likelihood(likelihood, mixture_components)
        for name, value in {"sigma": sigma, "lr": lr}.items():
            if value <= 0:
                raise ValueError(f"{name}={value} is invalid; it must be positive")
        for name, value in {"beta": beta, "free_bits": free_bits, "kl_warmup_steps": kl_warmup_steps,
                            "grad_clip": grad_clip, "skip_factor": skip_factor}.items():
            if value < 0:
                raise ValueError(f"{name}={value} is invalid; it must be >= 0")
        if not 0 <= ema_rate < 1:
            raise ValueError(f"ema_rate={ema_rate} is invalid; it must be in [0, 1)")
        self.save_hyperparameters()
        self.image_shape, self.likelihood, self.sigma, self.lr = tuple(image_shape), likelihood, sigma, lr
        self.beta, self.free_bits, self.kl_warmup_steps = beta, free_bits, kl_warmup_steps
        self.grad_clip, self.skip_factor, self.ema_rate = grad_clip, skip_factor, ema_rate
        out = output_channels(likelihood, self.image_shape[0], mixture_components)
        self.net = LadderNetwork(self.image_shape, out, resolutions, latent_channels, width, cells)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.log_sigma = nn.Parameter(torch.full(self.image_shape, math.log(sigma))) \
            if likelihood == "gaussian_learned" else None
        self.register_buffer("skipped_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("grad_norm_mean", torch.zeros(()))
        top = self.net.sizes[self.net.levels[0]]
        self.top_shape = (latent_channels, *top)
        self.latent_dim: int = math.prod(self.top_shape)
        self.group_dims = [latent_channels * math.prod(self.net.sizes[level]) for level in self.net.levels]
        self._skip_step = False

    @property
    def network(self) -> LadderNetwork:
        """The weights in use: the trained ones in train mode, their EMA in eval mode."""
        return self.net if self.training else self.ema

    # --- likelihood ---
    def _nll_per_image(self, out: Tensor, x: Tensor) -> Tensor:
        sigma = self.sigma if self.log_sigma is None else self.log_sigma.exp()
        return reconstruction_nll_per_image(out, x, self.likelihood, sigma)

    def _mean(self, out: Tensor) -> Tensor:
        return likelihood_mean(out, self.likelihood, self.image_shape[0])

    @property
    def likelihood_support(self) -> str:
        """Data p(x|z) is normalised for: "binary", "8bit" or "continuous" (`losses.SUPPORT`)."""
        return SUPPORT[self.likelihood]

    @property
    def likelihood_description(self) -> str:
        """One line naming p(x|z), for test_metrics.json."""
        return f"{self.likelihood} ({self.likelihood_support} data), {len(self.group_dims)} latent groups"

    has_likelihood = True
    has_kl_per_dim = True  # of the top group (genlab.models.protocols.KLPerDimension)

    # --- the protocol (genlab.models.protocols) ---
    def _top_posterior(self, x: Tensor) -> Gaussian:
        """q(z_0 | x): the top group sees the learned start state and the coarsest bottom-up features."""
        self.check_shape(x)
        net = self.network
        features = net.bottom_up(x)[net.levels[0]]
        start = net.start.expand(len(x), -1, -1, -1)
        return gaussian_from(net.groups[0].posterior(torch.cat([start, features], dim=1)))

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self._top_posterior(x)[0].flatten(1)

    def kl_per_dim(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Batch-mean KL(q(z_0|x) || N(0, I)) of each top-group dimension, (latent_dim,): orders traversal rows."""
        mean, std = self._top_posterior(x)
        return gaussian_kl(mean, std).flatten(1).mean(0)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Images in [0, 1] from top codes z (B, latent_dim), every lower group at its prior mean."""
        if z.shape[1:] != (self.latent_dim,):
            raise ValueError(f"decode takes top-group codes of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        top = z.reshape(len(z), *self.top_shape)
        out = self.network.top_down(None, len(z), lambda i, q, p: top if i == 0 else p[0])[0]
        return self._mean(out)

    def reconstruct(self, x: Tensor, y: Tensor | None = None, stochastic: bool = False,
                    generator: torch.Generator | None = None) -> Tensor:
        """Decode of every group's posterior mean; with `stochastic`, of a draw z ~ q(z|x) instead."""
        self.check_shape(x)
        pick = (lambda i, q, p: q[0] + q[1] * _noise(q[0], generator)) if stochastic else (lambda i, q, p: q[0])
        return self._mean(self.network.top_down(self.network.bottom_up(x), len(x), pick)[0])

    @torch.no_grad()
    def sample(self, num_samples: int, y: Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float | Sequence[float] = 1.0) -> Tensor:
        """Draws from the prior, group l's standard deviation scaled by temperature[l] (or one value for all)."""
        temps = [float(temperature)] * len(self.group_dims) if isinstance(temperature, (int, float)) \
            else [float(t) for t in temperature]
        if len(temps) != len(self.group_dims):
            raise ValueError(f"temperature={temperature} has {len(temps)} values; give one or one per group "
                             f"({len(self.group_dims)})")
        draw = lambda i, q, p: p[0] + temps[i] * p[1] * _noise(p[0], generator)  # noqa: E731
        return self._mean(self.network.top_down(None, num_samples, draw)[0])

    def log_importance_weights(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                               generator: torch.Generator | None = None) -> Tensor:
        """log w = log p(x|z) + sum_l [log p(z_l|z_<l) - log q(z_l|x, z_<l)] for z ~ q, (num_samples, B), nats."""
        self.check_shape(x)
        net, k = self.network, num_samples
        features = [f.repeat(k, 1, 1, 1) for f in net.bottom_up(x)]  # (k B, ...), draw-major
        out, zs, qs, ps = net.top_down(features, k * len(x), lambda i, q, p: q[0] + q[1] * _noise(q[0], generator))
        log_w = -self._nll_per_image(out, x.repeat(k, 1, 1, 1))
        for z, q, p in zip(zs, qs, ps):
            log_w = log_w + gaussian_log_prob(z, p) - gaussian_log_prob(z, q)
        return log_w.reshape(k, len(x))

    def check_shape(self, x: Tensor) -> None:
        check_batch_shape(self, x)

    # --- the objective ---
    def kl_weight(self) -> float:
        """beta times the warm-up factor at the current step in training; beta in evaluation."""
        return self.beta * (kl_annealing(self.global_step, self.kl_warmup_steps) if self.training else 1.0)

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """recon, kl, kl_<l> per group (nats per image) and the optimised "loss"."""
        self.check_shape(x)
        net = self.network
        out, zs, qs, ps = net.top_down(net.bottom_up(x), len(x), lambda i, q, p: q[0] + q[1] * torch.randn_like(q[1]))
        recon = self._nll_per_image(out, x).mean()
        kl_groups = torch.stack([gaussian_kl_between(q, p) for q, p in zip(qs, ps)], dim=1)  # (B, G)
        kl = kl_groups.sum(dim=1).mean()
        optimised = kl if self.free_bits == 0 else sum(
            free_bits_kl(kl_groups[:, i:i + 1], self.free_bits * dims) for i, dims in enumerate(self.group_dims))
        terms = {f"kl_{i}": kl_groups[:, i].mean() for i in range(len(self.group_dims))}
        return {"loss": recon + self.kl_weight() * optimised, "recon": recon, "kl": kl, **terms}

    # --- Lightning ---
    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.reconstruct(batch[0])

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        x, _ = batch
        terms = self.loss(x)
        extra = {}
        if stage == "train":
            extra["train/kl_weight"] = self.kl_weight()
        else:
            with torch.no_grad():
                extra[f"{stage}/mse"] = (self.reconstruct(x) - x).pow(2).mean()
            if support_covers(self.likelihood_support, data_support(x)):  # the true -ELBO: beta 1, no floor
                extra[f"{stage}/neg_elbo"] = (terms["recon"] + terms["kl"]).detach()
        self.log_terms(stage, terms, len(x), extra)
        return terms["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam([p for p in self.parameters() if p.requires_grad], lr=self.lr)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the gradient norm; on a spike drop the gradients, so that Adam skips the step (see `skip_factor`)."""
        norm, self._skip_step = self.clip_gradients_or_skip(self.global_step)
        if self._skip_step:
            optimizer.zero_grad(set_to_none=True)
        self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        self.log("train/skipped_updates", self.skipped_updates.float(), on_step=True, on_epoch=False)

    def clip_gradients_or_skip(self, step: int) -> tuple[Tensor, bool]:
        """(gradient norm before clipping, whether update `step` is to be skipped): clips the gradients to
        `grad_clip`, counts a skip in `skipped_updates`, else folds the norm into the running mean. A loop without
        Lightning calls this between backward and the optimiser step (no step, no `update_ema` when it says skip)."""
        params = [p for p in self.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params]).detach()
        accepted = step - int(self.skipped_updates)
        skip = bool(self.skip_factor > 0 and accepted >= SPIKE_WARMUP and norm > self.skip_factor * self.grad_norm_mean)
        if skip:
            self.skipped_updates += 1
            return norm, skip
        # the plain mean of the first SPIKE_WARMUP norms, then an EMA
        self.grad_norm_mean.lerp_(norm.to(self.grad_norm_mean), max(1 / (accepted + 1), 1 / SPIKE_WARMUP))
        if self.grad_clip > 0 and float(norm) + 1e-6 > self.grad_clip:  # else clipping would multiply by 1
            torch.nn.utils.clip_grads_with_norm_(params, self.grad_clip, norm)
        return norm, skip

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if not self._skip_step:
            self.update_ema()

    @torch.no_grad()
    def update_ema(self, step: int | None = None) -> None:
        """ema <- decay ema + (1 - decay) weights, decay = min(ema_rate, (1 + t) / (10 + t)) at step t (default: the
        trainer's global step): early evaluations are not dominated by the random initial weights. One fused call."""
        step = self.global_step if step is None else step
        decay = min(self.ema_rate, (1 + step) / (10 + step))
        torch._foreach_lerp_(list(self.ema.parameters()), list(self.net.parameters()), 1 - decay)
