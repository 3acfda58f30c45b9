"""Bottlenecks: the one place where an autoencoder, a VAE and their relatives differ.

Contract (after vector-quantize-pytorch): `forward(h) -> (z, terms)` where `terms` are named, unweighted loss
terms in nats per image (summed over latent dimensions, averaged over the batch) and `weights_at(step)` gives each
term's weight in the objective (terms without a weight are logged diagnostics); `encode(h)` is the deterministic
code; `sample_prior` draws z on the CPU. `in_features` is how many features the encoder must produce.
`Bottleneck` declares every member the `Autoencoder` loop uses, with defaults, so the loop never probes.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from .losses import free_bits_kl, gaussian_kl, kl_annealing, minibatch_total_correlation, standard_normal_log_prob
from .protocols import LatentPrior

LOG_VAR_RANGE = (-30.0, 20.0)  # exp(-30) ~ 1e-13 and exp(20) ~ 5e8: keeps exp() finite in fp16/bf16


class Bottleneck(nn.Module):
    """Base of every bottleneck. The defaults are those of a deterministic code with no loss terms and a nominal
    N(0, I) prior; a subclass overrides `encode` and what differs.

    Declared members:
        stochastic: forward's z is a draw (else it is encode(h), so the loop decodes it once for loss and recon).
        has_density: `sample_with_log_prob` gives log q(z|x): importance-weighted likelihoods apply.
        has_kl_per_dim: `kl_per_dim(h)` splits the KL by latent dimension.
        kl_term: the term the KL weight multiplies ("kl", "kl_free_bits"), logged as `train/kl_weight`; None
            without a KL.
        weights: each optimised term's weight at the end of any schedule; `weights_at(step)` during it.
    """

    stochastic = False
    has_density = False
    has_kl_per_dim = False
    kl_term: str | None = None

    def __init__(self, latent_dim: int, in_features: int | None = None) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.in_features = latent_dim if in_features is None else in_features
        self.weights: dict[str, float] = {}

    def weights_at(self, step: int | None) -> dict[str, float]:
        """Term weights at optimiser step `step`; None (evaluation) means the schedule's end values."""
        return dict(self.weights)

    def forward(self, h: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.encode(h), {}

    def encode(self, h: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement encode(h)")

    def sample_posterior(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A draw from q(z|x); the code itself for a deterministic bottleneck."""
        return self.encode(h)

    def sample_with_log_prob(self, h: Tensor, num_samples: int,
                             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """`num_samples` draws z ~ q(z|x) per input, (k, B, latent_dim), and their log q(z|x), (k, B)."""
        raise TypeError(f"{type(self).__name__} has no density q(z|x) (has_density is False)")

    def kl_per_dim(self, h: Tensor) -> Tensor:
        """KL of each latent dimension averaged over the batch, (latent_dim,): which dimensions carry information."""
        raise TypeError(f"{type(self).__name__} has no KL term per latent dimension (has_kl_per_dim is False)")

    def sample_prior(self, num_samples: int, generator: torch.Generator | None = None,
                     temperature: float = 1.0) -> Tensor:
        """(num_samples, latent_dim) draws from the prior, its standard deviation scaled by `temperature`."""
        return temperature * torch.randn(num_samples, self.latent_dim, generator=generator)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z) summed over the last dimension: (..., latent_dim) -> (...)."""
        return standard_normal_log_prob(z)


class IdentityBottleneck(Bottleneck):
    """Deterministic code z = h (plain autoencoder). No loss terms.

    Its nominal prior N(0, I) exists only so that AE samples can be drawn and compared with a VAE's: an AE is
    not trained to make them good, which is exactly what that comparison shows.
    """

    def encode(self, h: Tensor) -> Tensor:
        return h


class GaussianBottleneck(Bottleneck):
    """Diagonal-Gaussian posterior q(z|x) = N(mean, exp(log_var)) (Kingma & Welling, 2014) and prior N(0, I), or a
    learned `prior`.

    Expects 2 * latent_dim features (mean, log_var). Term `kl` = KL(q(z|x) || p(z)): in closed form for N(0, I);
    with a `prior` module (a `LatentPrior`, e.g. `realnvp.RealNVPPrior`) the one-sample Monte Carlo estimate
    log q(z|x) - log p(z) at the z the decoder sees. KL control: its weight is `beta` (Higgins et al., 2017) times
    `kl_annealing(step, kl_warmup_steps, kl_cycles, kl_cycle_ratio)`; with `free_bits` > 0 the objective uses the
    extra term `kl_free_bits` instead, and the true `kl` is only logged: sum_d max(KL_d, free_bits) for N(0, I)
    (`free_bits_kl`), and for a learned prior, whose KL does not split by dimension, the whole code as one group
    with floor latent_dim * free_bits (as `FlowGaussianBottleneck`). With `tc_weight` != 1 (beta-TCVAE, Chen et al.,
    2018, with alpha = gamma = 1) the extra term `tc`, the total correlation of the aggregate posterior at the z the
    decoder sees (`losses.minibatch_total_correlation`), enters the objective with weight tc_weight - 1, not
    annealed; at 1 it is neither computed nor logged, and the loss is the VAE's.
    """

    stochastic = True  # forward draws z ~ q(z|x); encode(h) is the mean
    has_density = True

    def __init__(self, latent_dim: int, beta: float = 1.0, free_bits: float = 0.0, kl_warmup_steps: int = 0,
                 kl_cycles: int = 1, kl_cycle_ratio: float = 1.0, tc_weight: float = 1.0,
                 prior: nn.Module | None = None) -> None:
        super().__init__(latent_dim, 2 * latent_dim)
        if beta < 0 or free_bits < 0 or kl_warmup_steps < 0 or kl_cycles < 1 or not 0 < kl_cycle_ratio <= 1:
            raise ValueError(f"KL control out of range: beta={beta} >= 0, free_bits={free_bits} >= 0, "
                             f"kl_warmup_steps={kl_warmup_steps} >= 0, kl_cycles={kl_cycles} >= 1 and "
                             f"kl_cycle_ratio={kl_cycle_ratio} in (0, 1] are required")
        if not tc_weight >= 0:  # NaN too
            raise ValueError(f"tc_weight={tc_weight} is invalid; it must be >= 0 (1: plain VAE, > 1: beta-TCVAE)")
        if prior is not None and (not isinstance(prior, LatentPrior) or prior.latent_dim != latent_dim):
            raise ValueError(f"prior={type(prior).__name__} must be a LatentPrior (log_prob(z), sample(n, generator, "
                             f"temperature), latent_dim) over latent_dim={latent_dim} dimensions, or None for N(0, I)")
        self.beta, self.free_bits, self.prior = beta, free_bits, prior
        self.kl_warmup_steps, self.kl_cycles, self.kl_cycle_ratio = kl_warmup_steps, kl_cycles, kl_cycle_ratio
        self.kl_term = "kl_free_bits" if free_bits > 0 else "kl"
        self.tc_weight = tc_weight
        self.weights = self.weights_at(None)

    @property
    def has_kl_per_dim(self) -> bool:
        """The closed-form KL against N(0, I) splits by dimension; one against a learned prior does not."""
        return self.prior is None

    def kl_weight(self, step: int | None) -> float:
        """Effective KL weight at `step`; None (evaluation) means the schedule's end value, `beta`."""
        if step is None:
            return self.beta
        return self.beta * kl_annealing(step, self.kl_warmup_steps, self.kl_cycles, self.kl_cycle_ratio)

    def weights_at(self, step: int | None) -> dict[str, float]:
        weights = {self.kl_term: self.kl_weight(step)}
        if self.tc_weight != 1:
            weights["tc"] = self.tc_weight - 1.0
        return weights

    def posterior(self, h: Tensor) -> Normal:
        mean, log_var = h.float().chunk(2, dim=-1)  # float32 even under autocast: exp and KL are sensitive
        # no argument validation: it is a host sync per step; a NaN reaches the loss, where NonFiniteGuard names it
        return Normal(mean, torch.exp(0.5 * log_var.clamp(*LOG_VAR_RANGE)), validate_args=False)

    def forward(self, h: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        q = self.posterior(h)
        z = q.rsample()
        if self.prior is not None:
            terms = self.monte_carlo_kl_terms(q.log_prob(z).sum(dim=-1), z)
        else:
            kl = gaussian_kl(q.loc, q.scale)  # (B, latent_dim)
            terms = {"kl": kl.sum(dim=-1).mean()}
            if self.free_bits > 0:
                terms["kl_free_bits"] = free_bits_kl(kl, self.free_bits)
        if self.tc_weight != 1:
            terms["tc"] = minibatch_total_correlation(z, q.loc, q.scale)
        return z, terms

    def monte_carlo_kl_terms(self, log_q: Tensor, z: Tensor) -> dict[str, Tensor]:
        """`kl` (and `kl_free_bits`) from one draw z per image and its log q(z|x), (B,): log q(z|x) - log p(z)."""
        kl = log_q - self.prior_log_prob(z)  # (B,)
        terms = {"kl": kl.mean()}
        if self.free_bits > 0:  # the whole code is one group: a Monte Carlo KL does not split by dimension
            terms["kl_free_bits"] = free_bits_kl(kl[:, None], self.free_bits * self.latent_dim)
        return terms

    def encode(self, h: Tensor) -> Tensor:
        return self.posterior(h).loc

    def sample_posterior(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        q = self.posterior(h)
        noise = torch.randn(q.loc.shape, generator=generator).to(q.loc.device)  # CPU noise, as in sample_prior
        return q.loc + q.scale * noise

    def sample_with_log_prob(self, h: Tensor, num_samples: int,
                             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        q = self.posterior(h)
        noise = torch.randn((num_samples, *q.loc.shape), generator=generator).to(q.loc.device)
        z = q.loc + q.scale * noise
        return z, q.log_prob(z).sum(dim=-1)

    def kl_per_dim(self, h: Tensor) -> Tensor:
        if self.prior is not None:
            return super().kl_per_dim(h)
        q = self.posterior(h)
        return gaussian_kl(q.loc, q.scale).mean(dim=0)

    def sample_prior(self, num_samples: int, generator: torch.Generator | None = None,
                     temperature: float = 1.0) -> Tensor:
        if self.prior is None:
            return super().sample_prior(num_samples, generator, temperature)
        return self.prior.sample(num_samples, generator=generator, temperature=temperature)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        return super().prior_log_prob(z) if self.prior is None else self.prior.log_prob(z)


class FlowGaussianBottleneck(Bottleneck):
    """A Gaussian posterior q0 refined by K invertible flows (Rezende & Mohamed, 2015): z_K = f_K o ... o f_1(z_0).

    The encoder produces the base's features followed by one context slice per flow (`flow.context_features`:
    amortized planar parameters, or an IAF context h). log q_K(z_K) = log q0(z_0) - sum_k log|det df_k/dz|, so the
    `kl` term is the one-sample Monte Carlo estimate log q_K(z_K) - log p(z_K), p the base's prior (N(0, I) or
    its learned `prior`); `log_det` (sum over flows, batch mean) is a logged diagnostic. KL control is the base's;
    free bits treat the whole code as one group with floor latent_dim * free_bits (the log-det does not split by
    dimension; Kingma et al., 2016 allow any grouping). The base's `tc_weight` must be 1: q_K(z|x) does not
    factorise by dimension, so the marginals q(z_d|x) that the total-correlation estimate needs have no closed form.
    """

    stochastic = True
    has_density = True

    def __init__(self, base: GaussianBottleneck, flows: Sequence[nn.Module]) -> None:
        if base.tc_weight != 1:
            raise ValueError(f"tc_weight={base.tc_weight} is not supported with flows (the TC estimate needs a "
                             f"factorised Gaussian posterior); use tc_weight=1 or a VAE without flows")
        context_sizes = [flow.context_features for flow in flows]
        super().__init__(base.latent_dim, base.in_features + sum(context_sizes))
        self.base, self.flows, self.context_sizes = base, nn.ModuleList(flows), context_sizes
        self.weights = base.weights

    @property
    def kl_term(self) -> str:
        """The term the KL weight multiplies: "kl", or "kl_free_bits" with free bits."""
        return self.base.kl_term

    @property
    def has_kl_per_dim(self) -> bool:
        return self.base.has_kl_per_dim

    def kl_weight(self, step: int | None) -> float:
        return self.base.kl_weight(step)

    def weights_at(self, step: int | None) -> dict[str, float]:
        return self.base.weights_at(step)

    def _split(self, h: Tensor) -> tuple[Tensor, list[Tensor]]:
        base_h, *contexts = h.split([self.base.in_features, *self.context_sizes], dim=-1)
        return base_h, contexts

    def _flow(self, z: Tensor, contexts: list[Tensor]) -> tuple[Tensor, Tensor]:
        log_det = z.new_zeros(len(z))
        for flow, ctx in zip(self.flows, contexts):
            z, step_log_det = flow(z, ctx.float())
            log_det = log_det + step_log_det
        return z, log_det

    def forward(self, h: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        base_h, contexts = self._split(h)
        q0 = self.base.posterior(base_h)
        z0 = q0.rsample()
        z, log_det = self._flow(z0, contexts)
        log_q = q0.log_prob(z0).sum(dim=-1) - log_det  # change of variables
        terms = self.base.monte_carlo_kl_terms(log_q, z)
        return z, {"kl": terms.pop("kl"), "log_det": log_det.mean(), **terms}

    def encode(self, h: Tensor) -> Tensor:
        """The base posterior mean pushed through the flows: a deterministic code (not the mean of q_K)."""
        base_h, contexts = self._split(h)
        return self._flow(self.base.encode(base_h), contexts)[0]

    def sample_posterior(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        base_h, contexts = self._split(h)
        return self._flow(self.base.sample_posterior(base_h, generator), contexts)[0]

    def sample_with_log_prob(self, h: Tensor, num_samples: int,
                             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """k draws z_K ~ q_K(z|x) per input, (k, B, latent_dim), and log q_K(z_K|x) = log q0(z_0) - sum log|det|."""
        base_h, contexts = self._split(h)
        z0, log_q0 = self.base.sample_with_log_prob(base_h, num_samples, generator)
        k, batch = log_q0.shape
        repeated = [ctx.expand(k, *ctx.shape).reshape(k * batch, -1) for ctx in contexts]  # same context per draw
        z, log_det = self._flow(z0.reshape(k * batch, -1), repeated)
        return z.reshape(k, batch, -1), log_q0 - log_det.reshape(k, batch)

    def sample_prior(self, num_samples: int, generator: torch.Generator | None = None,
                     temperature: float = 1.0) -> Tensor:
        return self.base.sample_prior(num_samples, generator, temperature)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        return self.base.prior_log_prob(z)

    def kl_per_dim(self, h: Tensor) -> Tensor:
        """Closed-form KL per dimension of the base posterior q0 (before the flows): enough to rank dimensions."""
        return self.base.kl_per_dim(self._split(h)[0])
