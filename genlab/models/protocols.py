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
