"""`SamplePCA`: generated images placed among the data, in the 2-D PCA of the data's pixels."""

from collections.abc import Sequence

import torch
from lightning import LightningModule
from matplotlib.figure import Figure

from ..models.protocols import Sampler
from .base import FigureCallback, condition_kind, decode_condition, real_batch
from .draw import panel_figure
from .latent_pca import PCA2, legend


class SamplePCA(FigureCallback):
    """One panel per entry of `num_samples` (the course's 20 and 200 generated faces): `num_images` validation
    images as grey dots and that many samples as red crosses, both projected on the data's two principal axes, so
    one sees whether samples cover the data or crowd into one part of it. Conditional models sample under the
    conditions of validation images."""

    key = "sample_pca"
    requires = Sampler

    def __init__(self, num_samples: Sequence[int] = (20, 200), num_images: int = 1000, every_n_epochs: int = 1,
                 seed: int = 0) -> None:
        super().__init__(every_n_epochs, seed)
        if not num_samples or min(num_samples) < 1 or num_images < 2:
            raise ValueError(f"need num_samples >= 1 each (got {list(num_samples)}) and num_images >= 2")
        self.num_samples, self.num_images = tuple(int(n) for n in num_samples), num_images

    def images_needed(self) -> int:
        return self.num_images

    def make_figure(self, model: LightningModule, data: object) -> Figure:
        x, y = real_batch(data, self.num_images, model.device)
        pca = PCA2(x.flatten(1))
        points = pca.project(x.flatten(1))
        fig, axes = panel_figure(len(self.num_samples), 4.6, 4.2)
        for ax, n in zip(axes, self.num_samples):
            generator = torch.Generator().manual_seed(self.seed)
            picks = torch.arange(n, device=x.device) % len(x)
            condition = decode_condition(model, x[picks], y[picks]) if condition_kind(model) else None
            samples = model.sample(n, condition, generator=generator)
            ax.scatter(*points.T, s=5, color="0.7", alpha=0.6, label=f"{len(x)} validation images")
            ax.scatter(*pca.project(samples.flatten(1)).T, s=22, color="tab:red", marker="x", label=f"{n} samples")
            pca.label_axes(ax)
            ax.set_title(f"{n} samples over the data (pixel PCA)", fontsize=10)
            legend(ax)
        return fig
