"""Invertible maps for flow-refined posteriors. Contract: `forward(z, ctx) -> (z', log_det)` with z, z' of shape
(B, latent_dim), `ctx` (B, context_features) produced by the encoder for each input, and `log_det` (B,) the
log |det dz'/dz|. Zero parameters (and zero context) give the identity, so a flow VAE can start as a plain VAE (the
gated IAF update starts near it).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORM_FLOOR = 1e-12  # guards w / ||w||^2 at w = 0, where the planar map is a pure shift whatever u is


class PlanarFlow(nn.Module):
    """Amortized planar flow f(z) = z + u_hat tanh(w.z + b) (Rezende & Mohamed, 2015, eq. 10).

    u, w, b are not parameters: they are the context, (B, 2 * latent_dim + 1) from the encoder, one set per image.
    Invertibility needs w.u_hat >= -1, ensured by u_hat = u + (m(w.u) - w.u) w / ||w||^2 with
    m(a) = -1 + softplus(a) (ibid., appendix A); then log|det| = log(1 + tanh'(t) w.u_hat) with t = w.z + b (eq. 12).
    That sum cancels in float32 when w.u << -1 and t ~ 0 (1 - (1 - tiny)), so the same value is computed as a sum of
    two non-negative terms, tanh(t)^2 + sech(t)^2 (1 + w.u_hat), with 1 + w.u_hat = softplus(w.u) formed directly.
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.context_features = 2 * latent_dim + 1

    def constrained(self, ctx: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(u_hat, w, b, w.u_hat) from raw context, with w.u_hat = m(w.u) >= -1 (all (B, 1) but u_hat, w)."""
        u_hat, w, b, wu_hat, _ = self._constrain(ctx)
        return u_hat, w, b, wu_hat

    def _constrain(self, ctx: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """`constrained`, plus 1 + w.u_hat = softplus(w.u) (1 + w.u at w = 0) formed without cancellation."""
        u, w, b = ctx.split([self.latent_dim, self.latent_dim, 1], dim=-1)
        wu = (w * u).sum(dim=-1, keepdim=True)
        w_sq = (w * w).sum(dim=-1, keepdim=True)
        ratio = w_sq / w_sq.clamp_min(NORM_FLOOR)  # 1, or 0 at w = 0
        correction = F.softplus(wu) - 1.0 - wu  # m(w.u) - w.u
        # w.u_hat in closed form: summing w * u_hat would cancel catastrophically in float32 when w.u << -1
        one_plus_wu_hat = F.softplus(wu) * ratio + (1.0 + wu) * (1.0 - ratio)
        return u + correction * w / w_sq.clamp_min(NORM_FLOOR), w, b, wu + correction * ratio, one_plus_wu_hat

    def forward(self, z: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        u_hat, w, b, _, one_plus_wu_hat = self._constrain(ctx)
        t = (w * z).sum(dim=-1, keepdim=True) + b  # (B, 1)
        activation = torch.tanh(t)
        e = torch.exp(-2.0 * t.abs())
        sech_sq = 4.0 * e / (1.0 + e).pow(2)  # tanh'(t), accurate where 1 - tanh^2 would round to 0
        det = activation.pow(2) + sech_sq * one_plus_wu_hat  # = 1 + tanh'(t) w.u_hat >= 0
        return z + u_hat * activation, torch.log(det.squeeze(-1).clamp_min(torch.finfo(det.dtype).tiny))


class MaskedLinear(nn.Linear):
    """Linear layer whose weight is multiplied by a fixed 0/1 mask (MADE, Germain et al., 2015)."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.float())  # (out_features, in_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


IAF_UPDATES = ("affine", "gated")
FORGET_GATE_BIAS = 2.0  # s starts sufficiently positive, close to +1 or +2, as Kingma et al. (2016) advise


class IAFFlow(nn.Module):
    """Inverse autoregressive flow step (Kingma et al., 2016) with (m_d, s_d) from z_<d (a one-hidden-layer MADE) and
    the context h, so the Jacobian is triangular.

    `update`: "affine" (the default) z' = m + exp(s) z, log|det| = sum_d s_d, starting as the identity (zero output
    layer); or "gated", the paper's numerically stable LSTM-like update z' = sigma z + (1 - sigma) m with
    sigma = sigmoid(s), log|det| = sum_d log sigma_d, whose s starts at the forget-gate bias +2
    (sigma 0.88), so it starts near, not at, the identity. `reverse` flips the variable order, so stacked steps
    alternate which dimensions see which.
    """

    def __init__(self, latent_dim: int, hidden_features: int, context_features: int, reverse: bool = False,
                 update: str = "affine") -> None:
        super().__init__()
        if update not in IAF_UPDATES:
            raise ValueError(f"update={update!r} is unknown; choose one of {IAF_UPDATES}")
        self.latent_dim, self.context_features, self.update = latent_dim, context_features, update
        degrees = torch.arange(1, latent_dim + 1)
        if reverse:
            degrees = degrees.flip(0)
        # hidden unit k sees inputs of degree <= its own degree; outputs of degree d see hidden degrees < d
        hidden_degrees = torch.arange(hidden_features) % max(latent_dim - 1, 1) + 1
        self.input = MaskedLinear(latent_dim, hidden_features, hidden_degrees[:, None] >= degrees[None, :])
        self.context = nn.Linear(context_features, hidden_features)
        output_mask = (degrees[:, None] > hidden_degrees[None, :]).repeat(2, 1)  # same mask for m and s
        self.output = MaskedLinear(hidden_features, 2 * latent_dim, output_mask)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        if update == "gated":
            nn.init.constant_(self.output.bias[latent_dim:], FORGET_GATE_BIAS)

    def forward(self, z: Tensor, ctx: Tensor) -> tuple[Tensor, Tensor]:
        hidden = F.elu(self.input(z) + self.context(ctx))
        m, s = self.output(hidden).chunk(2, dim=-1)
        if self.update == "gated":
            gate = torch.sigmoid(s)
            return gate * z + (1 - gate) * m, F.logsigmoid(s).sum(dim=-1)
        return m + torch.exp(s) * z, s.sum(dim=-1)
