"""`SampleGrid`: draws from the prior at one or more temperatures, from the same noise every epoch."""

import math
from collections.abc import Sequence

import torch
from lightning import LightningModule
from matplotlib.figure import Figure
from torch import Tensor

from ..models.protocols import Sampler
from .base import FigureCallback, accepts, decode_condition, real_batch
from .figures import grid_size, new_figure, show_grid


class SampleGrid(FigureCallback):
    """A square grid of `num_samples` samples per temperature, side by side.

    `temperatures` scale the prior's standard deviation (models whose `sample` takes `temperature`, e.g. every
    autoencoder): `(1.0, 20**0.5)` shows the usual samples next to draws from a prior with 20x the variance.
    """

    key = "samples"
    requires = Sampler

    def __init__(self, num_samples: int = 64, temperatures: Sequence[float] = (1.0,), every_n_epochs: int = 1,
                 seed: int = 0) -> None:
        super().__init__(every_n_epochs, seed)
        if num_samples < 1 or not temperatures:
            raise ValueError("num_samples must be >= 1 and temperatures non-empty")
        self.num_samples, self.temperatures = num_samples, tuple(float(t) for t in temperatures)

    def check(self, model: object) -> None:
        super().check(model)
        takes_temperature = accepts(model.sample, "temperature")
        if self.temperatures != (1.0,) and not takes_temperature:
            raise TypeError(f"SampleGrid(temperatures={self.temperatures}) needs sample(..., temperature=); "
                            f"{type(model).__name__}.sample has no temperature argument")

    def conditions(self, model: LightningModule, data: object) -> Tensor | None:
        """None for unconditional models; for conditional ones (whose sample(1) raises ValueError without y), the
        decode conditions of `num_samples` validation images."""
        try:
            model.sample(1, generator=torch.Generator().manual_seed(self.seed))
            return None
        except ValueError:
            x, y = real_batch(data, self.num_samples, model.device)
            c = decode_condition(model, x, y)
            return c[torch.arange(self.num_samples, device=c.device) % len(c)]  # a small val set: reuse them

    def make_figure(self, model: LightningModule, data: object) -> Figure:
        ncol = math.ceil(math.sqrt(self.num_samples))
        panels, y = [], self.conditions(model, data)
        for temperature in self.temperatures:
            # Same seed per temperature: the panels differ only by the scale of the same noise.
            generator = torch.Generator().manual_seed(self.seed)
            kwargs = {} if self.temperatures == (1.0,) else {"temperature": temperature}
            panels.append(model.sample(self.num_samples, y, generator=generator, **kwargs))
        width, height = grid_size(panels[0], ncol)
        fig = new_figure(width * len(panels), height)
        for ax, temperature, images in zip(fig.subplots(1, len(panels), squeeze=False)[0], self.temperatures, panels):
            title = "samples" if len(panels) == 1 else f"T = {temperature:.3g} (variance ×{temperature ** 2:.3g})"
            show_grid(ax, images, ncol, title=title)
        return fig
