"""`Reconstructions`: validation images above what the model makes of them."""

import torch
from lightning import LightningModule
from matplotlib.figure import Figure

from ..models.protocols import Denoiser
from .base import FigureCallback, real_batch
from .draw import grid_figure, stack_rows


class Reconstructions(FigureCallback):
    """Originals above reconstructions of the same `num_images` validation images.

    A `Denoiser` (e.g. `DenoisingAE`) gets rows clean / noisy / denoised, the noisy row its `corruption` of the
    clean images (the same noise every epoch). `num_stochastic` more rows decode draws z ~ q(z|x) instead of the
    posterior mean (`reconstruct(x, y, stochastic=True)`), to show how much a VAE's reconstructions vary; they are
    copies of the reconstruction for a deterministic code.
    """

    key = "reconstructions"

    def __init__(self, num_images: int = 8, num_stochastic: int = 0, every_n_epochs: int = 1, seed: int = 0) -> None:
        super().__init__(every_n_epochs, seed)
        if num_images < 1 or num_stochastic < 0:
            raise ValueError("num_images must be >= 1 and num_stochastic >= 0")
        self.num_images, self.num_stochastic = num_images, num_stochastic

    def images_needed(self) -> int:
        return self.num_images

    def make_figure(self, model: LightningModule, data: object) -> Figure:
        x, y = real_batch(data, self.num_images, model.device)
        noisy = x
        if isinstance(model, Denoiser):
            noisy = model.corruption(x, torch.Generator().manual_seed(self.seed))  # CPU noise: same every epoch
            rows, labels = [x, noisy, model.reconstruct(noisy, y)], ["clean", "noisy", "denoised"]
        else:
            rows, labels = [x, model.reconstruct(x, y)], ["original", "reconstruction"]
        generator = torch.Generator().manual_seed(self.seed)  # CPU noise, as the model contract asks
        for k in range(self.num_stochastic):
            rows.append(model.reconstruct(noisy, y, stochastic=True, generator=generator))
            labels.append(f"z ~ q(z|x) #{k + 1}")
        return grid_figure(stack_rows(rows), ncol=len(x), row_labels=labels, title="reconstructions")
