"""`SampleGrid`: draws from the prior at one or more temperatures, from the same noise every epoch."""

import math
from collections.abc import Sequence

import torch
from lightning import LightningModule
from matplotlib.figure import Figure
from torch import Tensor

from ..models.protocols import LatentModel, Sampler
from .base import FigureCallback, check_protocol, condition_kind, decode_condition, real_batch
from .draw import grid_size, new_figure, show_grid


class SampleGrid(FigureCallback):
    """A square grid of `num_samples` samples per temperature, side by side.

    `temperatures` scale the prior's standard deviation (every `Sampler` takes a `temperature`): `(1.0, 20**0.5)`
    shows the usual samples next to draws from a prior with 20x the variance.

    Args:
        around: index of a validation image; when given, the codes are its posterior mean plus `radius` times the
            temperature times N(0, I) noise (a region of the latent space) instead of prior draws.
        radius: the spread around that point, in prior standard deviations.
    """

    key = "samples"
    requires = Sampler

    def __init__(self, num_samples: int = 64, temperatures: Sequence[float] = (1.0,), around: int | None = None,
                 radius: float = 0.5, every_n_epochs: int = 1, seed: int = 0) -> None:
        super().__init__(every_n_epochs, seed)
        if num_samples < 1 or not temperatures or (around is not None and around < 0) or radius <= 0:
            raise ValueError("num_samples must be >= 1, temperatures non-empty, around >= 0 and radius > 0")
        self.num_samples, self.temperatures = num_samples, tuple(float(t) for t in temperatures)
        self.around, self.radius = around, radius

    def check(self, model: object) -> None:
        super().check(model)
        if self.around is not None:
            check_protocol(model, LatentModel, "SampleGrid(around=...)")

    def images_needed(self) -> int:
        return max(self.num_samples, 0 if self.around is None else self.around + 1)

    def conditions(self, model: LightningModule, data: object) -> Tensor | None:
        """None for unconditional models; for conditional ones (`condition_kind` not None), the decode conditions
        of `num_samples` validation images."""
        if condition_kind(model) is None:
            return None
        x, y = real_batch(data, self.num_samples, model.device)
        c = decode_condition(model, x, y)
        return c[torch.arange(self.num_samples, device=c.device) % len(c)]  # a small val set: reuse them

    def make_figure(self, model: LightningModule, data: object) -> Figure:
        ncol = math.ceil(math.sqrt(self.num_samples))
        panels, y = [], self.conditions(model, data)
        for temperature in self.temperatures:
            # Same seed per temperature: the panels differ only by the scale of the same noise.
            generator = torch.Generator().manual_seed(self.seed)
            if self.around is not None:
                panels.append(self.region(model, data, temperature, generator))
                continue
            panels.append(model.sample(self.num_samples, y, generator=generator, temperature=temperature))
        width, height = grid_size(panels[0], ncol)
        fig = new_figure(width * len(panels), height)
        for ax, temperature, images in zip(fig.subplots(1, len(panels), squeeze=False)[0], self.temperatures, panels):
            title = "samples" if len(panels) == 1 else f"T = {temperature:.3g} (variance ×{temperature ** 2:.3g})"
            if self.around is not None:
                title = f"around validation image {self.around}, radius {self.radius * temperature:.3g}"
            show_grid(ax, images, ncol, title=title)
        return fig

    def region(self, model: LightningModule, data: object, temperature: float, generator: torch.Generator) -> Tensor:
        """Decodes of codes drawn around the posterior mean of validation image `around`."""
        x, y = real_batch(data, self.around + 1, model.device)
        if self.around >= len(x):
            raise ValueError(f"around={self.around} but the data has only {len(x)} images")
        x, y = x[self.around:self.around + 1], y[self.around:self.around + 1]
        centre = model.encode(x, y)  # (1, D)
        noise = torch.randn((self.num_samples, *centre.shape[1:]), generator=generator).to(centre.device)
        c = decode_condition(model, x, y)
        return model.decode(centre + self.radius * temperature * noise, c.expand(self.num_samples, *c.shape[1:]))
