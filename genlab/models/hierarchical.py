"""`HierarchicalVAE`: a top-down hierarchy of latent groups (Ladder VAE, Sønderby et al., 2016; VDVAE, Child, 2021).

A bottom-up pass of residual cells gives features at every resolution. The top-down pass starts from a learned
constant at the coarsest resolution and meets the groups coarsest first, z_0 (the top) ... z_{G-1}: each holds a
prior p(z_l | z_<l) read from the top-down state h and a posterior q(z_l | x, z_<l) read from h and the bottom-up
features at its resolution (VDVAE's parameterisation: both share the top-down path). z_l enters h through a 1x1
conv, then a residual cell. The top group's prior is N(0, I), so `encode` (z_0's posterior mean, flattened) lives
where the figures that draw codes from N(0, I) expect it.
"""

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor, nn

from ..io import WeightsOnlyCheckpoint
from .blocks import check_batch_shape, check_positive, conv_sizes
from .losses import (SUPPORT, check_likelihood, data_support, free_bits_kl, gaussian_kl, kl_annealing,
                     likelihood_mean, output_channels, reconstruction_nll_per_image, support_covers)
from .steps import StageSteps

Batch = tuple[Tensor, Tensor]
Gaussian = tuple[Tensor, Tensor]  # (mean, std), (B, latent_channels, h, w) each
# draw(group index, posterior or None, prior) -> z: how the top-down pass picks each group's code
Draw = Callable[[int, Gaussian | None, Gaussian], Tensor]
SPIKE_WARMUP = 100  # updates before any is skipped: the mean gradient norm must be known first
STD_OFFSET = math.log(math.e - 1)  # softplus(0 + STD_OFFSET) = 1: a zero network output means std 1


def _gaussian(params: Tensor) -> Gaussian:
    mean, raw = params.float().chunk(2, dim=1)
    return mean, F.softplus(raw + STD_OFFSET).clamp_min(1e-5)


def gaussian_log_prob(z: Tensor, dist: Gaussian) -> Tensor:
    """log N(z; mean, std^2) of each image, summed over every dimension but the batch: (B, ...) -> (B,)."""
    mean, std = dist
    return (-0.5 * ((z - mean) / std).pow(2) - std.log() - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


def gaussian_kl_between(q: Gaussian, p: Gaussian) -> Tensor:
    """KL(q || p) of diagonal Gaussians, summed per image: (B,)."""
    (qm, qs), (pm, ps) = q, p
    return (torch.log(ps / qs) + (qs.pow(2) + (qm - pm).pow(2)) / (2 * ps.pow(2)) - 0.5).flatten(1).sum(1)


def _cell(c_in: int, c_mid: int, c_out: int, last_scale: float = 1.0) -> nn.Sequential:
    """VDVAE's bottleneck block, GELU before each conv: 1x1, 3x3, 3x3, 1x1; the last conv's init scaled."""
    convs = [nn.Conv2d(c_in, c_mid, 1), nn.Conv2d(c_mid, c_mid, 3, padding=1),
             nn.Conv2d(c_mid, c_mid, 3, padding=1), nn.Conv2d(c_mid, c_out, 1)]
    with torch.no_grad():
        convs[-1].weight.mul_(last_scale)
        convs[-1].bias.mul_(last_scale)
    return nn.Sequential(*(layer for conv in convs for layer in (nn.GELU(), conv)))


class Residual(nn.Module):
    """x + cell(x), the residual stream of both passes; `scale` shrinks the cell's initial output (VDVAE:
    1 / sqrt(number of cells)) so that a deep stack starts near the identity."""

    def __init__(self, width: int, scale: float) -> None:
        super().__init__()
        self.body = _cell(width, max(width // 4, 1), width, scale)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class LatentGroup(nn.Module):
    """One top-down block: prior p(z | h) (N(0, I) for the top group), posterior q(z | h, features), z into h."""

    def __init__(self, width: int, latent_channels: int, top: bool, scale: float) -> None:
        super().__init__()
        mid = max(width // 4, 1)
        self.latent_channels = latent_channels
        self.posterior = _cell(2 * width, mid, 2 * latent_channels)
        # prior mean/std and a feature added to h; zero at init: p = N(0, I), h unchanged (VDVAE's zero_last)
        self.prior = None if top else _cell(width, mid, 2 * latent_channels + width, last_scale=0.0)
        self.project = nn.Conv2d(latent_channels, width, 1)
        with torch.no_grad():
            self.project.weight.mul_(scale)
        self.cell = Residual(width, scale)

    def forward(self, h: Tensor, features: Tensor | None, draw: Callable[[Gaussian | None, Gaussian], Tensor]
                ) -> tuple[Tensor, Tensor, Gaussian | None, Gaussian]:
        """(new h, z, q or None without features, p)."""
        q = None if features is None else _gaussian(self.posterior(torch.cat([h, features], dim=1)))
        if self.prior is None:
            shape = (len(h), self.latent_channels, *h.shape[2:])
            p = (h.new_zeros(shape, dtype=torch.float32), h.new_ones(shape, dtype=torch.float32))
        else:
            out = self.prior(h)
            p, h = _gaussian(out[:, :2 * self.latent_channels]), h + out[:, 2 * self.latent_channels:]
        z = draw(q, p)
        return self.cell(h + self.project(z.to(h.dtype))), z, q, p


class LadderNetwork(nn.Module):
    """Bottom-up encoder, top-down latent groups at `resolutions` (heights, coarsest first) and an output conv."""

    def __init__(self, image_shape: Sequence[int], out_channels: int, resolutions: Sequence[int],
                 latent_channels: int, width: int, cells: int) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        sizes = conv_sizes(height, width_px, max(height.bit_length(), 1))
        heights = [h for h, _ in sizes]
        bad = [r for r in resolutions if r not in heights]
        if bad or list(resolutions) != sorted(resolutions):
            raise ValueError(f"resolutions={list(resolutions)} is invalid for {height}x{width_px} images; list "
                             f"heights from {sorted(set(heights))}, coarsest first (repeats add groups)")
        self.sizes = sizes[: heights.index(min(resolutions)) + 1]  # level i: H/2^i, down to the coarsest group
        self.levels = [heights.index(r) for r in resolutions]  # each group's level
        scale = 1 / math.sqrt(2 * cells * len(self.sizes) + len(resolutions))
        stack = lambda: nn.Sequential(*(Residual(width, scale) for _ in range(cells)))  # noqa: E731
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.up_cells = nn.ModuleList(stack() for _ in self.sizes)
        self.start = nn.Parameter(torch.zeros(1, width, *self.sizes[-1]))
        self.groups = nn.ModuleList(LatentGroup(width, latent_channels, top=i == 0, scale=scale)
                                    for i in range(len(resolutions)))
        self.down_cells = nn.ModuleList(stack() for _ in self.sizes)
        self.head = nn.Conv2d(width, out_channels, 3, padding=1)

    def bottom_up(self, x: Tensor) -> list[Tensor]:
        """Features (B, width, h_i, w_i) at every level i, full resolution first."""
        h, features = self.stem(x), []
        for i, cells in enumerate(self.up_cells):
            h = cells(h if i == 0 else F.adaptive_avg_pool2d(h, self.sizes[i]))
            features.append(h)
        return features

    def top_down(self, features: list[Tensor] | None, batch: int, draw: Draw) -> tuple[Tensor, list, list, list]:
        """(decoder output, codes z_l, posteriors q_l (None without features), priors p_l), groups top first."""
        h = self.start.expand(batch, -1, -1, -1)
        zs, qs, ps = [], [], []
        for level in reversed(range(len(self.sizes))):
            if level < len(self.sizes) - 1:
                h = F.interpolate(h, size=self.sizes[level], mode="nearest")
            for index in (i for i, group_level in enumerate(self.levels) if group_level == level):
                h, z, q, p = self.groups[index](h, None if features is None else features[level],
                                                lambda q, p, index=index: draw(index, q, p))
                zs.append(z), qs.append(q), ps.append(p)
            h = self.down_cells[level](h)
        return self.head(h), zs, qs, ps


def _noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, I) noise shaped like `like`: from `generator` on the CPU (same draws on any device), else on the device."""
    if generator is None:
        return torch.randn_like(like)
    return torch.randn(like.shape, generator=generator).to(like)


class HierarchicalVAE(WeightsOnlyCheckpoint, StageSteps, LightningModule):
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

    # --- the protocol (genlab.models.protocols) ---
    def _top_posterior(self, x: Tensor) -> Gaussian:
        """q(z_0 | x): the top group sees the learned start state and the coarsest bottom-up features."""
        self.check_shape(x)
        net = self.network
        features = net.bottom_up(x)[net.levels[0]]
        start = net.start.expand(len(x), -1, -1, -1)
        return _gaussian(net.groups[0].posterior(torch.cat([start, features], dim=1)))

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
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.lr)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the gradient norm; on a spike drop the gradients, so that Adam skips the step (see `skip_factor`)."""
        params = [p for p in self.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip > 0 else math.inf).detach()
        accepted = self.global_step - int(self.skipped_updates)
        self._skip_step = bool(self.skip_factor > 0 and accepted >= SPIKE_WARMUP
                               and norm > self.skip_factor * self.grad_norm_mean)
        if self._skip_step:
            optimizer.zero_grad(set_to_none=True)
            self.skipped_updates += 1
        else:  # the plain mean of the first SPIKE_WARMUP norms, then an EMA
            self.grad_norm_mean.lerp_(norm.to(self.grad_norm_mean), max(1 / (accepted + 1), 1 / SPIKE_WARMUP))
        self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        self.log("train/skipped_updates", self.skipped_updates.float(), on_step=True, on_epoch=False)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if not self._skip_step:
            self.update_ema()

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- decay ema + (1 - decay) weights, decay = min(ema_rate, (1 + t) / (10 + t)) at step t: early
        evaluations are not dominated by the random initial weights."""
        decay = min(self.ema_rate, (1 + self.global_step) / (10 + self.global_step))
        for average, weight in zip(self.ema.parameters(), self.net.parameters()):
            average.lerp_(weight, 1 - decay)
