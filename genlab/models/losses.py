"""Pure loss functions. Reconstruction terms are negative log-likelihoods in nats per image:
summed over every data dimension, averaged over the batch (the ELBO's scale, comparable with papers)."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LIKELIHOODS = ("bernoulli", "gaussian")


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x | logits) for x in [0, 1], from logits (safe under autocast); (B, ...) -> scalar."""
    return bernoulli_nll_per_image(logits, x).mean()


def bernoulli_nll_per_image(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x | logits) of each image, (B, ...) -> (B,): a normalised likelihood only for binary x."""
    nll = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
    return nll.flatten(1).sum(dim=1)


def gaussian_nll(mean: Tensor, x: Tensor, sigma: float) -> Tensor:
    """-log N(x | mean, sigma^2 I) with a fixed sigma: 0.5 * ||x - mean||^2 / sigma^2 + D/2 * log(2 pi sigma^2)."""
    return gaussian_nll_per_image(mean, x, sigma).mean()


def gaussian_nll_per_image(mean: Tensor, x: Tensor, sigma: float) -> Tensor:
    """-log N(x | mean, sigma^2 I) of each image, (B, ...) -> (B,)."""
    squared = (x.float() - mean.float()).pow(2).flatten(1).sum(dim=1)
    dims = x[0].numel()
    return 0.5 * squared / sigma**2 + 0.5 * dims * math.log(2 * math.pi * sigma**2)


def reconstruction_nll(logits: Tensor, x: Tensor, likelihood: str, sigma: float = 1.0) -> Tensor:
    """The decoder's -log p(x|z); decoders emit logits and the Gaussian mean is sigmoid(logits), kept in [0, 1]."""
    return reconstruction_nll_per_image(logits, x, likelihood, sigma).mean()


def reconstruction_nll_per_image(logits: Tensor, x: Tensor, likelihood: str, sigma: float = 1.0) -> Tensor:
    """`reconstruction_nll` of each image, (B,): what importance weighting needs."""
    if likelihood == "bernoulli":
        return bernoulli_nll_per_image(logits, x)
    if likelihood == "gaussian":
        return gaussian_nll_per_image(torch.sigmoid(logits.float()), x, sigma)
    raise ValueError(f"likelihood={likelihood!r} is unknown; choose one of {LIKELIHOODS}")


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension: the prior term of every Gaussian-prior model."""
    return -0.5 * (z.float().pow(2) + math.log(2 * math.pi)).sum(dim=-1)


def gaussian_kl(mean: Tensor, std: Tensor) -> Tensor:
    """Elementwise KL(N(mean, std^2) || N(0, 1)) = 0.5 * (mean^2 + std^2 - 1) - log std (Kingma & Welling, App. B)."""
    return 0.5 * (mean.pow(2) + std.pow(2) - 1.0) - torch.log(std)


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
