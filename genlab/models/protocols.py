"""Capabilities, declared: the protocols every callback and metric reads; nothing here knows a concrete model class.

A model has a capability when it has the protocol's members: a model that cannot do something lacks the member
(a VQ-VAE has no `sample`), or, for a method member, sets it to None (Python's runtime protocols treat a method
member set to None as absent: an `Autoencoder` built without a corruption has `corruption = None`, so it is not a
`Denoiser`). Members a whole family has but some of its members cannot use carry a declared flag instead
(`has_likelihood`, `has_kl_per_dim`). Callers check with `isinstance`, never by reading signatures or catching
errors.
"""

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Encoder(Protocol):
    """A model with a latent code of `latent_dim` features: `encode` gives it (the posterior mean for VAEs)."""

    latent_dim: int

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class LatentModel(Encoder, Protocol):
    """An `Encoder` whose `decode` gives images in [0, 1]. `reconstruct(x, y)` is decode(encode(x)); with
    `stochastic=True` it decodes a draw z ~ q(z|x) (noise drawn on the CPU from `generator`) instead, which is the
    same image for a deterministic code (AE, VQ-VAE)."""

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor: ...

    def reconstruct(self, x: Tensor, y: Tensor | None = None, stochastic: bool = False,
                    generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class Sampler(Protocol):
    """A model with a prior: `sample` draws noise on the CPU from `generator`, then decodes on the model's device.
    `temperature` scales the prior's standard deviation (1: the prior itself); every sampler takes it."""

    def sample(self, num_samples: int, y: Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor: ...


@runtime_checkable
class Conditional(Protocol):
    """A model whose `decode`/`sample` read a condition y: `condition_kind` is "label" (integer class labels),
    "image" (full-size images, of which the model reads a region) or None (a family member with no condition).
    A model without `condition_kind` is unconditional."""

    condition_kind: str | None


@runtime_checkable
class Denoiser(Protocol):
    """A model trained to undo a corruption: `corruption(x, generator)` is the noisy input its encoder is trained
    on (noise drawn on the CPU from `generator`) and `reconstruct(noisy)` its denoised image."""

    def corruption(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class SpatialLatent(Protocol):
    """A model whose code is a grid (B, D, H', W') rather than a vector: `grid_shape` is (H', W')."""

    grid_shape: tuple[int, int]


@runtime_checkable
class CodebookModel(Protocol):
    """A vector-quantised model: its code vectors (K, D) and its encoder outputs z_e (B, D, ...) before
    quantisation."""

    codebook: Tensor

    def encode_unquantized(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class KLPerDimension(Protocol):
    """A latent model whose KL term splits by latent dimension: `kl_per_dim(x, y)` is the batch-mean KL of each
    dimension, (latent_dim,), in nats (~0 where the posterior collapsed onto the prior). `has_kl_per_dim` is False
    for family members without one (no KL term, or a learned prior that does not factorise)."""

    has_kl_per_dim: bool

    def kl_per_dim(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class LossModel(Protocol):
    """A model trained on named terms: `loss(x, y)` -> {"loss": the optimised sum, "<term>": ...}, nats per image."""

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]: ...


@runtime_checkable
class LikelihoodModel(Protocol):
    """A model with an encoder q(z|x) and a likelihood p(x|z)p(z): importance weights for log p(x) (Burda et al.,
    2016). `has_likelihood` is False for members of a family that lack one (e.g. a deterministic autoencoder)."""

    has_likelihood: bool

    def log_importance_weights(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                               generator: torch.Generator | None = None) -> Tensor:
        """(num_samples, B): log p(x|z_i) + log p(z_i) - log q(z_i|x), z_i ~ q(z|x), in nats per image."""
        ...


@runtime_checkable
class ExactLikelihood(Protocol):
    """A model with a tractable density: `log_likelihood(x)` is log p(x) of each image, (B,), in nats (PPCA, a
    flow)."""

    def log_likelihood(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class LikelihoodSupport(Protocol):
    """A likelihood model that says which data its p(x|z) is normalised for, `likelihood_support`: "binary",
    "8bit" or "continuous", so that evaluation refuses to call a cross-entropy a likelihood
    (genlab.metrics.likelihood), and describes it in one line, `likelihood_description`. A model that does not
    say is taken to be a density ("continuous")."""

    likelihood_support: str
    likelihood_description: str


@runtime_checkable
class FeatureExtractor(Protocol):
    """A network with `features(x) -> (B, feature_dim)` of images in [0, 1]: the feature space of sample distances
    (e.g. genlab's `Classifier`)."""

    feature_dim: int

    def features(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class LatentPrior(Protocol):
    """A learned density p(z) over latent vectors, for a bottleneck's prior: `log_prob(z)` sums over the last
    dimension, (..., latent_dim) -> (...); `sample` draws (num_samples, latent_dim) from noise drawn on the CPU."""

    latent_dim: int

    def log_prob(self, z: Tensor) -> Tensor: ...

    def sample(self, num_samples: int, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor: ...
