"""The protocol every callback and metric relies on: nothing here knows a concrete model class."""

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class LatentModel(Protocol):
    """A model with a latent code: `encode` gives the code (posterior mean for VAEs), `decode` images in [0, 1]."""

    latent_dim: int

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor: ...

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class Sampler(Protocol):
    """A model with a prior: `sample` draws noise on the CPU from `generator`, then decodes on the model's device."""

    def sample(self, num_samples: int, y: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class Conditional(Protocol):
    """A model whose `decode`/`sample` read a condition y: `condition_kind` is "label" (integer class labels),
    "image" (full-size images, of which the model reads a region) or None (unconditional)."""

    condition_kind: str | None


@runtime_checkable
class CodebookModel(Protocol):
    """A vector-quantised model: its code vectors (K, D) and its encoder outputs z_e (B, D, ...) before
    quantisation."""

    codebook: Tensor

    def encode_unquantized(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class LikelihoodModel(Protocol):
    """A model with an encoder q(z|x) and a likelihood p(x|z)p(z): importance weights for log p(x) (Burda et al.,
    2016). `has_likelihood` is False for members of a family that lack one (e.g. a deterministic autoencoder).
    Optional: `likelihood_support`, the data p(x|z) is normalised for ("binary", "8bit" or "continuous", the
    default), so that evaluation refuses to call a cross-entropy a likelihood (genlab.metrics.likelihood)."""

    has_likelihood: bool

    def log_importance_weights(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                               generator: torch.Generator | None = None) -> Tensor:
        """(num_samples, B): log p(x|z_i) + log p(z_i) - log q(z_i|x), z_i ~ q(z|x), in nats per image."""
        ...
