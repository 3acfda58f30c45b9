"""Invertible maps for flow-refined posteriors. Contract: `forward(z, ctx) -> (z', log_det)` with z, z' of shape
(B, latent_dim), `ctx` (B, context_features) produced by the encoder for each input, and `log_det` (B,) the
log |det dz'/dz|. Zero parameters (and zero context) give the identity, so a flow VAE can start as a plain VAE.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORM_FLOOR = 1e-12  # guards w / ||w||^2 at w = 0, where the planar map is a pure shift whatever u is


class PlanarFlow(nn.Module):
    """Amortized planar flow f(z) = z + u_hat tanh(w.z + b) (Rezende & Mohamed, 2015, eq. 10).

    u, w, b are not parameters: they are the context, (B, 2 * latent_dim + 1) from the encoder, one set per image.
    Invertibility needs w.u_hat >= -1, ensured by u_hat = u + (m(w.u) - w.u) w / ||w||^2 with
    m(a) = -1 + softplus(a) (ibid., appendix A); then log|det| = log(1 + tanh'(w.z + b) w.u_hat) (eq. 12).
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.context_features = 2 * latent_dim + 1

    def constrained(self, ctx: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(u_hat, w, b, w.u_hat) from raw context, with w.u_hat = m(w.u) >= -1 (all (B, 1) but u_hat, w)."""
        u, w, b = ctx.split([self.latent_dim, self.latent_dim, 1], dim=-1)
        wu = (w * u).sum(dim=-1, keepdim=True)
        w_sq = (w * w).sum(dim=-1, keepdim=True)
        ratio = w_sq / w_sq.clamp_min(NORM_FLOOR)  # 1, or 0 at w = 0
        correction = F.softplus(wu) - 1.0 - wu  # m(w.u) - w.u
        # w.u_hat in closed form: summing w * u_hat would cancel catastrophically in float32 when w.u << -1
        return u + correction * w / w_sq.clamp_min(NORM_FLOOR), w, b, wu + correction * ratio

    def forward(self, z: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        u_hat, w, b, wu_hat = self.constrained(ctx)
        activation = torch.tanh((w * z).sum(dim=-1, keepdim=True) + b)  # (B, 1)
        det = 1.0 + (1.0 - activation.pow(2)) * wu_hat  # tanh' in (0, 1] and w.u_hat >= -1: det >= 0
        return z + u_hat * activation, torch.log(det.squeeze(-1).clamp_min(NORM_FLOOR))


class MaskedLinear(nn.Linear):
    """Linear layer whose weight is multiplied by a fixed 0/1 mask (MADE, Germain et al., 2015)."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.float())  # (out_features, in_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class IAFFlow(nn.Module):
    """Inverse autoregressive flow step z' = mu + sigma * z (Kingma et al., 2016, eq. 10), sigma = exp(s).

    (mu_d, s_d) depend only on z_<d (a one-hidden-layer MADE) and on the context h, so the Jacobian is
    triangular with diagonal sigma and log|det| = sum_d s_d. `reverse` flips the variable order, so stacked steps
    alternate which dimensions see which. The output layer starts at zero: every step starts as the identity.
    """

    def __init__(self, latent_dim: int, hidden_features: int, context_features: int, reverse: bool = False) -> None:
        super().__init__()
        self.latent_dim, self.context_features = latent_dim, context_features
        degrees = torch.arange(1, latent_dim + 1)
        if reverse:
            degrees = degrees.flip(0)
        # hidden unit k sees inputs of degree <= its own degree; outputs of degree d see hidden degrees < d
        hidden_degrees = torch.arange(hidden_features) % max(latent_dim - 1, 1) + 1
        self.input = MaskedLinear(latent_dim, hidden_features, hidden_degrees[:, None] >= degrees[None, :])
        self.context = nn.Linear(context_features, hidden_features)
        output_mask = (degrees[:, None] > hidden_degrees[None, :]).repeat(2, 1)  # same mask for mu and s
        self.output = MaskedLinear(hidden_features, 2 * latent_dim, output_mask)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, z: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        hidden = F.elu(self.input(z) + self.context(ctx))
        mu, s = self.output(hidden).chunk(2, dim=-1)
        return mu + torch.exp(s) * z, s.sum(dim=-1)
