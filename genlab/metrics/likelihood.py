"""Log-likelihood of test data: the importance-weighted bound (Burda et al., 2016), the ELBO and bits per dimension.

Units. Binarised data (a Bernoulli likelihood on {0, 1} pixels): nats per image, the figure papers quote for
MNIST. 8-bit data (integers 0..255 that the datamodules serve as x = n / 255), bits per dimension of the discrete
data, two ways:
- `discrete`: the model's p(x|z) is a pmf over the 256 levels (discretised Gaussian, logistic mixture), so its
  -log P(n) is already a code length: bits/dim = nats / (D log 2), no dequantisation (the literature's unit);
- `dequantized`: a density model (a Gaussian likelihood, PPCA), through uniform dequantisation (Theis et al.,
  2016): x_deq = (n + u) / 256 with u ~ U[0, 1)^D is a continuous variable in [0, 1)^D, and for any density p

      log P(n) >= E_u[log p(x_deq)] - D log 256      (change of variables n + u -> (n + u) / 256: Jacobian 256^-D)

  so bits/dim = (-log p(x_deq) + D log 256) / (D log 2), an upper bound on the discrete model's code length.
"""

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from ..models.protocols import ExactLikelihood, LikelihoodModel, LikelihoodSupport

Batch = tuple[Tensor, Tensor]


def dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """x = n / 255 (8-bit images in [0, 1]) -> (n + u) / 256 with u ~ U[0, 1), noise drawn on the CPU."""
    levels = torch.round(x * 255)
    noise = torch.rand(x.shape, generator=generator).to(x.device)
    return (levels + noise) / 256


def bits_per_dim(nll_nats: Tensor | float, dims: int) -> Tensor | float:
    """Nats per image of dequantised data in [0, 1)^D -> bits per dimension of the 8-bit data (see module doc)."""
    return (nll_nats + dims * math.log(256)) / (dims * math.log(2))


def likelihood_support(model: object) -> str:
    """Data the model's likelihood is normalised for: its `likelihood_support` ("binary", "8bit", "continuous"),
    "continuous" (a density) when it does not say (it is not a `LikelihoodSupport`)."""
    return model.likelihood_support if isinstance(model, LikelihoodSupport) else "continuous"


def likelihood_method(model: object) -> str | None:
    """"exact" (an `ExactLikelihood`, e.g. PPCA), "iwae" (a `LikelihoodModel` with `has_likelihood`: an encoder
    and a likelihood) or None (no likelihood: AE, VQ-VAE, GAN)."""
    if isinstance(model, ExactLikelihood):
        return "exact"
    if isinstance(model, LikelihoodModel) and model.has_likelihood:
        return "iwae"
    return None


@torch.no_grad()
def importance_weighted_log_likelihood(model: LikelihoodModel, x: Tensor, y: Tensor | None = None,
                                       num_samples: int = 5000, chunk_size: int = 100,
                                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(log p_k(x), ELBO) per image, (B,) each, in nats: log (1/k sum_i w_i) and mean_i log w_i over k draws.

    The k draws are taken `chunk_size` at a time and combined with a running logsumexp, so memory is bounded by
    chunk_size * B decodes whatever k is. log p_k(x) rises towards log p(x) as k grows (Burda et al., thm. 1).
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"num_samples={num_samples} and chunk_size={chunk_size} must both be >= 1")
    running, log_w_sum = None, 0.0
    for start in range(0, num_samples, chunk_size):
        log_w = model.log_importance_weights(x, y, min(chunk_size, num_samples - start), generator).double()
        chunk = torch.logsumexp(log_w, dim=0)
        running = chunk if running is None else torch.logaddexp(running, chunk)
        log_w_sum = log_w_sum + log_w.sum(dim=0)
    return running - math.log(num_samples), log_w_sum / num_samples


@torch.no_grad()
def evaluate_likelihood(model: object, batches: Iterable[Batch], num_samples: int = 5000, chunk_size: int = 100,
                        dequantized: bool = False, seed: int = 0, max_images: int | None = None,
                        discrete: bool = False) -> dict[str, float]:
    """Test-set means of -log p(x): `iwae_nll` (importance-weighted estimate, k = num_samples) or `exact_nll`
    (models with `log_likelihood`); for IWAE also `neg_elbo` and `elbo_gap` = neg_elbo - iwae_nll >= 0 (what the
    ELBO misses: KL(q(z|x) || p(z|x)), up to the k-sample bound's own gap), all in nats per image. For 8-bit data
    also bits per dimension, `iwae_bpd` / `exact_bpd` and `neg_elbo_bpd`: with `discrete` (a pmf over the 256
    levels: exact) or `dequantized` (a density: an upper bound), see the module docstring.

    Uses the first `max_images` images (all when None); `images` in the result says how many.
    """
    method = likelihood_method(model)
    if discrete and dequantized:
        raise ValueError("discrete=True (a pmf over 8-bit levels) and dequantized=True (a density) exclude each other")
    if method is None:
        raise TypeError(f"{type(model).__name__} has no likelihood: it needs log_likelihood(x) or "
                        "log_importance_weights(x, y, num_samples) (genlab.models.protocols.ExactLikelihood, "
                        "LikelihoodModel)")
    generator = torch.Generator().manual_seed(seed)  # the same draws (and dequantisation noise) on every run
    device = getattr(model, "device", torch.device("cpu"))
    log_px, elbo, dims = [], [], None
    for x, y in batches:
        if max_images is not None:
            remaining = max_images - sum(len(t) for t in log_px)
            if remaining <= 0:
                break
            x, y = x[:remaining], y[:remaining]
        x, y = x.to(device), y.to(device)
        dims = x[0].numel()
        if dequantized:
            x = dequantize(x, generator)
        if method == "exact":
            log_px.append(model.log_likelihood(x).double().cpu())
        else:
            batch_log_px, batch_elbo = importance_weighted_log_likelihood(model, x, y, num_samples, chunk_size,
                                                                          generator)
            log_px.append(batch_log_px.cpu())
            elbo.append(batch_elbo.cpu())
    if not log_px:
        raise ValueError("evaluate_likelihood got no images")
    nll = -torch.cat(log_px).mean().item()
    result = {f"{method}_nll": nll, "images": float(sum(len(t) for t in log_px))}
    if elbo:
        result["neg_elbo"] = -torch.cat(elbo).mean().item()
        result["elbo_gap"] = result["neg_elbo"] - nll
    if dequantized or discrete:
        to_bits = (lambda nats: nats / (dims * math.log(2))) if discrete else (lambda nats: bits_per_dim(nats, dims))
        result[f"{method}_bpd"] = to_bits(nll)
        if elbo:
            result["neg_elbo_bpd"] = to_bits(result["neg_elbo"])
    return result
