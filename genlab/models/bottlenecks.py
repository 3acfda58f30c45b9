"""Bottlenecks: the one place where an autoencoder, a VAE and their relatives differ.

Contract (after vector-quantize-pytorch): `forward(h) -> (z, terms)` where `terms` are named, unweighted loss
terms in nats per image (summed over latent dimensions, averaged over the batch) and `weights[name]` is each
term's weight in the objective (terms without a weight are logged diagnostics); `encode(h)` is the deterministic code; `sample_prior` draws z on the CPU.
`in_features` is how many features the encoder must produce.
"""

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from .losses import gaussian_kl

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

    def forward(self, h: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return h, {}

    def encode(self, h: Tensor) -> Tensor:
        return h

    def sample_prior(self, num_samples: int, generator: torch.Generator | None = None,
                     temperature: float = 1.0) -> Tensor:
        return temperature * torch.randn(num_samples, self.latent_dim, generator=generator)


class GaussianBottleneck(IdentityBottleneck):
    """Diagonal-Gaussian posterior q(z|x) = N(mean, exp(log_var)) and prior N(0, I) (Kingma & Welling, 2014).

    Expects 2 * latent_dim features (mean, log_var). Term `kl` = KL(q(z|x) || p(z)) in closed form, weighted by
    `beta` (Higgins et al., 2017).
    """

    def __init__(self, latent_dim: int, beta: float = 1.0) -> None:
        super().__init__(latent_dim)
        self.in_features = 2 * latent_dim
        self.weights = {"kl": beta}

    def posterior(self, h: Tensor) -> Normal:
        mean, log_var = h.float().chunk(2, dim=-1)  # float32 even under autocast: exp and KL are sensitive
        return Normal(mean, torch.exp(0.5 * log_var.clamp(*LOG_VAR_RANGE)))

    def forward(self, h: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        q = self.posterior(h)
        return q.rsample(), {"kl": gaussian_kl(q.loc, q.scale).sum(dim=-1).mean()}

    def encode(self, h: Tensor) -> Tensor:
        return self.posterior(h).loc

    def kl_per_dim(self, h: Tensor) -> Tensor:
        """KL of each latent dimension averaged over the batch, (latent_dim,): which dimensions carry information."""
        q = self.posterior(h)
        return gaussian_kl(q.loc, q.scale).mean(dim=0)
