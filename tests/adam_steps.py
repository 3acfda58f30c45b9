"""A few Adam steps on one batch, for tests that a model or setting trains at all."""

import torch
from torch import nn


def losses_before_and_after(model: nn.Module, x: torch.Tensor, steps: int = 30,
                            lr: float = 3e-3) -> tuple[float, float]:
    """`model.loss(x)["loss"]` before and after `steps` Adam steps on x, each taken with the same posterior draw
    (torch reseeded), so the two are a deterministic comparison."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def loss() -> torch.Tensor:
        torch.manual_seed(0)
        return model.loss(x)["loss"]

    before = loss().item()
    for _ in range(steps):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    return before, loss().item()
