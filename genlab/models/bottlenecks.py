"""Bottlenecks: the one place where an autoencoder, a VAE and their relatives differ.

Contract (after vector-quantize-pytorch): `forward(h) -> (z, terms)` where `terms` are named, unweighted loss
terms in nats per image (summed over latent dimensions, averaged over the batch) and `weights[name]` is each
term's weight in the objective (terms without a weight are logged diagnostics); `encode(h)` is the deterministic
code; `sample_prior` draws z on the CPU.
`in_features` is how many features the encoder must produce. Optional members the loop uses when present:
`weights_at(step)` (scheduled weights), `kl_weight(step)`, `kl_per_dim(h)`, `sample_posterior(h, generator)` and
`sample_with_log_prob(h, num_samples, generator)` (k draws of z with log q(z|x): importance-weighted likelihoods).
"""

from collections.abc import Sequence


import torch
from torch import Tensor, nn
from torch.distributions import Normal

from .losses import free_bits_kl, gaussian_kl, kl_annealing

LOG_VAR_RANGE = (-30.0, 20.0)  # exp(-30) ~ 1e-13 and exp(20) ~ 5e8: keeps exp() finite in fp16/bf16


class IdentityBottleneck(nn.Module):
    """Deterministic code z = h (plain autoencoder). No loss terms.

    Its nominal prior N(0, I) exists only so that AE samples can be drawn and compared with a VAE's: an AE is
    not trained to make them good, which is exactly what that comparison shows.
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = self.in_features = latent_dim
        self.weights: dict[str, float] = {}

    stochastic = False  # forward's z is encode(h): the loop decodes it once for both loss and reconstruction

    def forward(self, h: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return h, {}

    def encode(self, h: Tensor) -> Tensor:
        return h

    def sample_prior(self, num_samples: int, generator: torch.Generator | None = None,
                     temperature: float = 1.0) -> Tensor:
        return temperature * torch.randn(num_samples, self.latent_dim, generator=generator)

    def sample_posterior(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A draw from q(z|x); the code itself for a deterministic bottleneck."""
        return self.encode(h)


class GaussianBottleneck(IdentityBottleneck):
    """Diagonal-Gaussian posterior q(z|x) = N(mean, exp(log_var)) and prior N(0, I) (Kingma & Welling, 2014).

    Expects 2 * latent_dim features (mean, log_var). Term `kl` = KL(q(z|x) || p(z)) in closed form. KL control:
    its weight is `beta` (Higgins et al., 2017) times `kl_annealing(step, kl_warmup_steps, kl_cycles,
    kl_cycle_ratio)`; with `free_bits` > 0 the objective uses the extra term `kl_free_bits` = sum_d max(KL_d, free_bits)
    (`free_bits_kl`) instead, and the true `kl` is only logged.
    """

    stochastic = True  # forward draws z ~ q(z|x); encode(h) is the mean

    def __init__(self, latent_dim: int, beta: float = 1.0, free_bits: float = 0.0, kl_warmup_steps: int = 0,
                 kl_cycles: int = 1, kl_cycle_ratio: float = 1.0) -> None:
        super().__init__(latent_dim)
        if beta < 0 or free_bits < 0 or kl_warmup_steps < 0 or kl_cycles < 1 or not 0 < kl_cycle_ratio <= 1:
            raise ValueError(f"KL control out of range: beta={beta} >= 0, free_bits={free_bits} >= 0, "
                             f"kl_warmup_steps={kl_warmup_steps} >= 0, kl_cycles={kl_cycles} >= 1 and "
                             f"kl_cycle_ratio={kl_cycle_ratio} in (0, 1] are required")
        self.in_features = 2 * latent_dim
        self.beta, self.free_bits = beta, free_bits
        self.kl_warmup_steps, self.kl_cycles, self.kl_cycle_ratio = kl_warmup_steps, kl_cycles, kl_cycle_ratio
        self.kl_term = "kl_free_bits" if free_bits > 0 else "kl"
        self.weights = {self.kl_term: beta}

    def kl_weight(self, step: int | None) -> float:
        """Effective KL weight at `step`; None (evaluation) means the schedule's end value, `beta`."""
        if step is None:
            return self.beta
        return self.beta * kl_annealing(step, self.kl_warmup_steps, self.kl_cycles, self.kl_cycle_ratio)

    def weights_at(self, step: int | None) -> dict[str, float]:
        return {self.kl_term: self.kl_weight(step)}

    def posterior(self, h: Tensor) -> Normal:
        mean, log_var = h.float().chunk(2, dim=-1)  # float32 even under autocast: exp and KL are sensitive
        # no argument validation: it is a host sync per step; a NaN reaches the loss, where NonFiniteGuard names it
        return Normal(mean, torch.exp(0.5 * log_var.clamp(*LOG_VAR_RANGE)), validate_args=False)

    def forward(self, h: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        q = self.posterior(h)
        kl = gaussian_kl(q.loc, q.scale)  # (B, latent_dim)
        terms = {"kl": kl.sum(dim=-1).mean()}
        if self.free_bits > 0:
            terms["kl_free_bits"] = free_bits_kl(kl, self.free_bits)
        return q.rsample(), terms

    def encode(self, h: Tensor) -> Tensor:
        return self.posterior(h).loc

    def sample_posterior(self, h: Tensor, generator: torch.Generator | None = None) -> Tensor:
        q = self.posterior(h)
        noise = torch.randn(q.loc.shape, generator=generator).to(q.loc.device)  # CPU noise, as in sample_prior
        return q.loc + q.scale * noise

    def sample_with_log_prob(self, h: Tensor, num_samples: int,
                             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """`num_samples` draws z ~ q(z|x) per input, (k, B, latent_dim), and their log q(z|x), (k, B)."""
        q = self.posterior(h)
        noise = torch.randn((num_samples, *q.loc.shape), generator=generator).to(q.loc.device)
        z = q.loc + q.scale * noise
        return z, q.log_prob(z).sum(dim=-1)

    def kl_per_dim(self, h: Tensor) -> Tensor:
        """KL of each latent dimension averaged over the batch, (latent_dim,): which dimensions carry information."""
        q = self.posterior(h)
        return gaussian_kl(q.loc, q.scale).mean(dim=0)


class FlowGaussianBottleneck(nn.Module):
    """A Gaussian posterior q0 refined by K invertible flows (Rezende & Mohamed, 2015): z_K = f_K o ... o f_1(z_0).

    The encoder produces the base's features followed by one context slice per flow (`flow.context_features`:
    amortized planar parameters, or an IAF context h). log q_K(z_K) = log q0(z_0) - sum_k log|det df_k/dz|, so the
    `kl` term is the one-sample Monte Carlo estimate log q_K(z_K) - log p(z_K); `log_det` (sum over flows, batch
    mean) is a logged diagnostic. KL control is the base's; free bits treat the whole code as one group with floor
    latent_dim * free_bits (the log-det does not split by dimension; Kingma et al., 2016 allow any grouping).
    """

    def __init__(self, base: GaussianBottleneck, flows: Sequence[nn.Module]) -> None:
        super().__init__()
        self.base, self.flows = base, nn.ModuleList(flows)
        self.latent_dim = base.latent_dim
        self.context_sizes = [flow.context_features for flow in flows]
        self.in_features = base.in_features + sum(self.context_sizes)
        self.weights = base.weights

    stochastic = True

    @property
    def kl_term(self) -> str:
        """The term the KL weight multiplies: "kl", or "kl_free_bits" with free bits."""
        return self.base.kl_term

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
        kl = log_q - Normal(0.0, 1.0, validate_args=False).log_prob(z).sum(dim=-1)  # (B,)
        terms = {"kl": kl.mean(), "log_det": log_det.mean()}
        if self.base.free_bits > 0:
            terms["kl_free_bits"] = free_bits_kl(kl[:, None], self.base.free_bits * self.latent_dim)
        return z, terms

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

    def kl_per_dim(self, h: Tensor) -> Tensor:
        """Closed-form KL per dimension of the base posterior q0 (before the flows): enough to rank dimensions."""
        return self.base.kl_per_dim(self._split(h)[0])
