"""Latent-space statistics: active units (Burda et al., 2016) and the mutual information gap (Chen et al., 2018)."""

import torch
from torch import Tensor

ACTIVITY_THRESHOLD = 0.01  # Burda et al. (2016), sec. 5.2: a unit is active when Cov_x(E_q[u]) > 0.01


def active_units(means: Tensor, threshold: float = ACTIVITY_THRESHOLD) -> tuple[int, Tensor]:
    """Number of latent dimensions whose posterior mean varies across the data, and the variances (latent_dim,).

    `means` (N, latent_dim) are E_q[z|x_n] over a data set: a unit the encoder ignores has the same mean for
    every x, so its variance over x is ~0.
    """
    if means.ndim != 2 or len(means) < 2:
        raise ValueError(f"means must be (N >= 2, latent_dim), got shape {tuple(means.shape)}")
    variances = means.double().var(dim=0, correction=0)
    return int((variances > threshold).sum()), variances


def discretize(values: Tensor, bins: int) -> Tensor:
    """Equal-width histogram bin of every entry, per column: (N, D) floats -> (N, D) int64 in [0, bins)."""
    if bins < 2:
        raise ValueError(f"bins={bins} must be >= 2")
    low, high = values.min(dim=0).values, values.max(dim=0).values
    scaled = (values - low) / (high - low).clamp_min(1e-12) * bins
    return scaled.long().clamp(0, bins - 1)


def codes(values: Tensor) -> Tensor:
    """Each column's distinct values -> integers 0..n_distinct-1, (N, D) int64: for discrete factors."""
    return torch.stack([torch.unique(column, return_inverse=True)[1] for column in values.T], dim=1)


def entropy(labels: Tensor) -> float:
    """Entropy in nats of one discrete variable given as integer labels (N,)."""
    p = torch.bincount(labels).double() / len(labels)
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def mutual_information(a: Tensor, b: Tensor) -> float:
    """I(a; b) in nats between two discrete variables given as integer labels (N,), from their joint histogram."""
    joint = torch.bincount(a * (int(b.max()) + 1) + b, minlength=(int(a.max()) + 1) * (int(b.max()) + 1))
    joint = joint.double().reshape(int(a.max()) + 1, int(b.max()) + 1) / len(a)
    outer = joint.sum(dim=1, keepdim=True) * joint.sum(dim=0, keepdim=True)
    mask = joint > 0
    return float((joint[mask] * (joint[mask] / outer[mask]).log()).sum())


def mutual_information_gap(latents: Tensor, factors: Tensor, bins: int = 20) -> tuple[float, Tensor]:
    """MIG (Chen et al., 2018, eq. 6): mean over factors v_k of (I(z_j*; v_k) - I(z_j'; v_k)) / H(v_k), where
    z_j* and z_j' are the latent dimensions with the largest and second largest mutual information with v_k.

    Latents (N, L) are discretised into `bins` equal-width histogram bins per dimension (the estimator of Locatello
    et al., 2019); factors (N, F) are discrete (each distinct value a class). Constant factors (H = 0) are skipped.
    Returns the MIG and the per-factor normalised gaps (F,), NaN for skipped factors. Needs L >= 2.
    """
    if latents.ndim != 2 or factors.ndim != 2 or len(latents) != len(factors):
        raise ValueError(f"latents (N, L) and factors (N, F) must have the same N; got {tuple(latents.shape)} "
                         f"and {tuple(factors.shape)}")
    if latents.shape[1] < 2:
        raise ValueError(f"MIG compares the two most informative latent dimensions; got latent_dim={latents.shape[1]}")
    z, v = discretize(latents.double().cpu(), bins), codes(factors.cpu())
    gaps = torch.full((v.shape[1],), float("nan"), dtype=torch.float64)
    for k in range(v.shape[1]):
        h = entropy(v[:, k])
        if h <= 0:
            continue
        mi = sorted((mutual_information(z[:, j], v[:, k]) for j in range(z.shape[1])), reverse=True)
        gaps[k] = (mi[0] - mi[1]) / h
    valid = gaps[~gaps.isnan()]
    if len(valid) == 0:
        raise ValueError("every factor is constant: MIG is undefined")
    return float(valid.mean()), gaps
