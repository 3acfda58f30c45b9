"""Pure loss functions. Reconstruction terms are negative log-likelihoods in nats per image: summed over every
data dimension, averaged over the batch (the ELBO's scale, comparable with papers).

Likelihoods p(x|z), from the decoder output `out` (B, output_channels, H, W), and the data each is a normalised
distribution for (`SUPPORT`):
- "bernoulli": logits (C channels); a likelihood only for binary x, on grey/colour x a cross-entropy;
- "gaussian": mean = sigmoid(out) (C channels), fixed `sigma`; a density on R^D;
- "gaussian_learned": as "gaussian" with sigma learned, one parameter per data dimension (initialised at `sigma`;
  the caller holds it and passes the tensor);
- "discretized_gaussian": mean and log-scale per dimension (2C channels), each 8-bit level n (x = n / 255) gets the
  Gaussian mass of its bin [x - 1/510, x + 1/510], the end bins extended to +-inf: an exact pmf over 256 levels;
- "logistic_mixture": per channel a K-component mixture of discretised logistics (3 K C channels: K weight logits,
  K means, K log-scales for each channel in turn), the same bins (PixelCNN++'s likelihood, without the coupling
  between colour channels).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SUPPORT = {"bernoulli": "binary", "gaussian": "continuous", "gaussian_learned": "continuous",
           "discretized_gaussian": "8bit", "logistic_mixture": "8bit"}
LIKELIHOODS = tuple(SUPPORT)
# log-scales are clamped: scale >= 9e-4 in [0, 1] units (a quarter of a bin: probabilities up to ~1) and <= 1100
# (every bin's mass still distinct from 0 in the arithmetic, so log and its gradient stay finite)
LOG_SCALE_RANGE = (-7.0, 7.0)
HALF_BIN = 0.5 / 255


def check_likelihood(likelihood: str, components: int = 1) -> None:
    """Raise a ValueError naming an unknown likelihood or a mixture without components."""
    if likelihood not in SUPPORT:
        raise ValueError(f"likelihood={likelihood!r} is unknown; choose one of {LIKELIHOODS}")
    if not isinstance(components, int) or components < 1:
        raise ValueError(f"mixture_components={components!r} is invalid; it must be a positive integer")


def output_channels(likelihood: str, channels: int, components: int = 10) -> int:
    """Channels the decoder must output for `likelihood` on images of `channels` channels."""
    check_likelihood(likelihood, components)
    return {"discretized_gaussian": 2 * channels, "logistic_mixture": 3 * components * channels}.get(likelihood,
                                                                                                    channels)


def data_support(x: Tensor) -> str:
    """What x is: "binary" ({0, 1}), "8bit" (multiples of 1/255 in [0, 1], as datamodules serve) or "continuous"."""
    if bool(((x == 0) | (x == 1)).all()):
        return "binary"
    levels = x * 255
    on_grid = (levels - levels.round()).abs().max() < 1e-3 and bool(((x >= 0) & (x <= 1)).all())
    return "8bit" if on_grid else "continuous"


def support_covers(needed: str, seen: str) -> bool:
    """Whether a likelihood normalised for `needed` data (a `SUPPORT` value) is a likelihood of data that is `seen`
    (a `data_support` value): densities cover everything, 8-bit pmfs cover binary data, Bernoulli only binary."""
    return needed == "continuous" or seen == needed or (needed == "8bit" and seen == "binary")


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """Binary cross-entropy from logits (safe under autocast), (B, ...) -> scalar: -log p(x) only for binary x."""
    return bernoulli_nll_per_image(logits, x).mean()


def bernoulli_nll_per_image(logits: Tensor, x: Tensor) -> Tensor:
    """Binary cross-entropy of each image, (B, ...) -> (B,): -log p(x) for binary x, not a likelihood otherwise."""
    nll = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
    return nll.flatten(1).sum(dim=1)


def gaussian_nll(mean: Tensor, x: Tensor, sigma: float | Tensor) -> Tensor:
    """-log N(x | mean, sigma^2 I): 0.5 * ||x - mean||^2 / sigma^2 + D/2 * log(2 pi sigma^2) for a scalar sigma."""
    return gaussian_nll_per_image(mean, x, sigma).mean()


def gaussian_nll_per_image(mean: Tensor, x: Tensor, sigma: float | Tensor) -> Tensor:
    """-log N(x | mean, diag(sigma^2)) of each image, (B, ...) -> (B,); sigma a float or broadcastable to x[0]."""
    return _gaussian_nll_elementwise(mean, x, sigma).flatten(1).sum(dim=1)


def _gaussian_nll_elementwise(mean: Tensor, x: Tensor, sigma: float | Tensor) -> Tensor:
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    return 0.5 * ((x.float() - mean.float()) / sigma).pow(2) + torch.log(sigma) + 0.5 * math.log(2 * math.pi)


def _log_bin_mass(x: Tensor, first: Tensor, last: Tensor, interior: Tensor) -> Tensor:
    """log of the mass of x's 8-bit bin: `first` (log F(upper edge)) at n = 0, `last` (log(1 - F(lower edge))) at
    n = 255, `interior` (log(F(upper) - F(lower))) between."""
    return torch.where(x < HALF_BIN, first, torch.where(x > 1 - HALF_BIN, last, interior))


def discretized_logistic_log_prob(mean: Tensor, log_scale: Tensor, x: Tensor) -> Tensor:
    """log P(n) of x = n / 255 under a logistic(mean, scale) discretised to 256 bins, elementwise.

    With a = (x + 1/510 - mean) / s and b = (x - 1/510 - mean) / s the bin mass is sigmoid(a) - sigmoid(b)
    = sigmoid(a) (1 - sigmoid(b)) (1 - exp(b - a)): every factor in log space, no cancellation, since
    a - b = 1 / (255 s) is known exactly.
    """
    inv_scale = torch.exp(-log_scale.clamp(*LOG_SCALE_RANGE))
    a, b = (x + HALF_BIN - mean) * inv_scale, (x - HALF_BIN - mean) * inv_scale
    log_cdf_a, log_sf_b = -F.softplus(-a), -F.softplus(b)
    interior = log_cdf_a + log_sf_b + torch.log(-torch.expm1(-inv_scale / 255))
    return _log_bin_mass(x, log_cdf_a, log_sf_b, interior)


def discretized_logistic_mixture_log_prob(params: Tensor, x: Tensor, dim: int = 2) -> Tensor:
    """log P(n) of x = n / 255 under a K-component mixture of discretised logistics, elementwise over x.

    `params` has 3K entries along `dim` (K weight logits, K means, K log-scales) and is x's shape otherwise.
    """
    logits, mean, log_scale = params.chunk(3, dim=dim)
    log_p = discretized_logistic_log_prob(mean, log_scale, x.unsqueeze(dim))
    return torch.logsumexp(torch.log_softmax(logits, dim=dim) + log_p, dim=dim)


def discretized_gaussian_log_prob(mean: Tensor, log_scale: Tensor, x: Tensor) -> Tensor:
    """log P(n) of x = n / 255 under N(mean, scale^2) discretised to 256 bins, elementwise (float64 inside).

    The interior mass Phi(a) - Phi(b) is taken in the lower tail (mirrored when the bin is above the mean), where
    log Phi is accurate: log Phi(a) + log(1 - exp(log Phi(b) - log Phi(a))).
    """
    inv_scale = torch.exp(-log_scale.double().clamp(*LOG_SCALE_RANGE))
    a, b = (x.double() + HALF_BIN - mean.double()) * inv_scale, (x.double() - HALF_BIN - mean.double()) * inv_scale
    mirror = a + b > 0
    upper, lower = torch.where(mirror, -b, a), torch.where(mirror, -a, b)
    log_upper = torch.special.log_ndtr(upper)
    interior = log_upper + torch.log(-torch.expm1(torch.special.log_ndtr(lower) - log_upper))
    log_p = _log_bin_mass(x.double(), torch.special.log_ndtr(a), torch.special.log_ndtr(-b), interior)
    return log_p.to(torch.promote_types(x.dtype, torch.float32))


def _check_channels(out: Tensor, x: Tensor, likelihood: str) -> None:
    channels, got = x.shape[1], out.shape[1]
    if likelihood == "discretized_gaussian" and got != 2 * channels:
        needed = f"{2 * channels} channels"
    elif likelihood == "logistic_mixture" and got % (3 * channels) != 0:
        needed = f"3 K {channels} channels ({30 * channels} channels for K = 10 components)"
    else:
        return
    raise ValueError(f"likelihood={likelihood!r} on {channels}-channel images needs decoder outputs of {needed}, "
                     f"got {got}: build the decoder with losses.output_channels()")


def reconstruction_nll_elementwise(out: Tensor, x: Tensor, likelihood: str, sigma: float | Tensor = 1.0) -> Tensor:
    """The decoder's -log p(x_i|z) of every data dimension, (B, C, H, W) from its output `out`."""
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(out.float(), x.float(), reduction="none")
    if likelihood in ("gaussian", "gaussian_learned"):
        return _gaussian_nll_elementwise(torch.sigmoid(out.float()), x, sigma)
    if likelihood == "discretized_gaussian":
        _check_channels(out, x, likelihood)
        mean, log_scale = out.float().chunk(2, dim=1)
        return -discretized_gaussian_log_prob(mean, log_scale, x.float())
    if likelihood == "logistic_mixture":
        _check_channels(out, x, likelihood)
        params = out.float().unflatten(1, (x.shape[1], -1))  # (B, C, 3K, H, W)
        return -discretized_logistic_mixture_log_prob(params, x.float(), dim=2)
    raise ValueError(f"likelihood={likelihood!r} is unknown; choose one of {LIKELIHOODS}")


def reconstruction_nll_per_image(out: Tensor, x: Tensor, likelihood: str, sigma: float | Tensor = 1.0,
                                 scored: Tensor | None = None) -> Tensor:
    """-log p(x|z) of each image, (B,), summed over the dimensions where `scored` (C, H, W) is 1 (all if None)."""
    nll = reconstruction_nll_elementwise(out, x, likelihood, sigma)
    return (nll if scored is None else nll * scored).flatten(1).sum(dim=1)


def reconstruction_nll(out: Tensor, x: Tensor, likelihood: str, sigma: float | Tensor = 1.0,
                       scored: Tensor | None = None) -> Tensor:
    """Batch mean of `reconstruction_nll_per_image`: the `recon` term, nats per image."""
    return reconstruction_nll_per_image(out, x, likelihood, sigma, scored).mean()


def likelihood_mean(out: Tensor, likelihood: str, channels: int) -> Tensor:
    """Images (B, channels, H, W) in [0, 1] from the decoder output: sigmoid(out) for Bernoulli and Gaussian, the
    clamped mean for the discretised Gaussian, the clamped mixture mean sum_k pi_k mu_k for the logistic mixture."""
    if likelihood == "discretized_gaussian":
        return out.float().chunk(2, dim=1)[0].clamp(0.0, 1.0)
    if likelihood == "logistic_mixture":
        logits, mean, _ = out.float().unflatten(1, (channels, -1)).chunk(3, dim=2)  # (B, C, K, H, W) each
        return (torch.softmax(logits, dim=2) * mean).sum(dim=2).clamp(0.0, 1.0)
    return torch.sigmoid(out)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension: the prior term of every Gaussian-prior model."""
    return -0.5 * (z.float().pow(2) + math.log(2 * math.pi)).sum(dim=-1)


def gaussian_kl(mean: Tensor, std: Tensor) -> Tensor:
    """Elementwise KL(N(mean, std^2) || N(0, 1)) = 0.5 * (mean^2 + std^2 - 1) - log std (Kingma & Welling, App. B)."""
    return 0.5 * (mean.pow(2) + std.pow(2) - 1.0) - torch.log(std)


def minibatch_total_correlation(z: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Total correlation KL(q(z) || prod_d q(z_d)) of the aggregate posterior, estimated on one batch (nats per image).

    z (B, L) holds one draw per image from its diagonal Gaussian posterior N(mean, std^2), (B, L) each. Every
    density of q is the batch's own mixture: log q(z_i) ~ logsumexp_j log q(z_i | x_j) - log B, and the same per
    dimension. Chen et al.'s (2018) minibatch-weighted sampling subtracts log(N B) instead (N the data set's size):
    its estimate is this one plus the constant (L - 1) log N, with the same gradients. Biased as an estimate for the
    data set: it estimates the total correlation of the B-component mixture, 0 for B = 1 and at most (L - 1) log B,
    lumpier than q(z) in many dimensions (independent codes read above 0): compare runs at one batch size.
    Cost: B * B * L.
    """
    z, mean, std = z.float(), mean.float(), std.float()
    # log q(z_i,d | x_j,d): draw i under the posterior of image j, (B, B, L)
    log_q = -0.5 * ((z[:, None] - mean[None]) / std[None]).pow(2) - torch.log(std[None]) - 0.5 * math.log(2 * math.pi)
    log_joint = torch.logsumexp(log_q.sum(dim=2), dim=1)  # (B,)
    log_marginals = torch.logsumexp(log_q, dim=1).sum(dim=1)  # (B,)
    batch, latent_dim = z.shape
    return (log_joint - log_marginals).mean() + (latent_dim - 1) * math.log(batch)


# --- KL control: pure functions of the step, so a resumed run (same global_step) gets the same weight ---
def kl_annealing(step: int, total_steps: int, cycles: int = 1, ratio: float = 1.0) -> float:
    """Factor in [0, 1] on the KL weight: cyclical annealing (Fu et al., 2019, eq. 7) over `total_steps`.

    The horizon is split into `cycles` periods; in each the factor rises linearly from 0 to 1 over the first
    `ratio` of the period, then stays at 1. `cycles=1, ratio=1` is plain linear warm-up (Bowman et al., 2016);
    after `total_steps` (or when `total_steps <= 0`) the factor is 1.
    """
    if total_steps <= 0 or step >= total_steps:
        return 1.0
    period = total_steps / cycles
    tau = (step % period) / period  # position inside the current cycle, in [0, 1)
    return min(1.0, tau / ratio)


def free_bits_kl(kl: Tensor, floor: float) -> Tensor:
    """Free-bits objective (Kingma et al., 2016, eq. 15): sum over groups of max(batch-mean KL of the group, floor).

    `kl` is (B, G): each image's KL split into G groups (latent dimensions for a diagonal Gaussian). A group whose
    KL is under `floor` nats gets no gradient, so the encoder is not pushed to collapse it further.
    """
    return kl.mean(dim=0).clamp(min=floor).sum()
