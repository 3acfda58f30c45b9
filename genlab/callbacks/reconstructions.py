"""`Reconstructions`: validation images above what the model makes of them."""

import torch
from lightning import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.figure import Figure

from .base import FigureCallback, accepts, real_batch, seeded
from .figures import grid_figure, stack_rows


class Reconstructions(FigureCallback):
    """Originals above reconstructions of the same `num_images` validation images.

    Optional capabilities, used when the model has them:
      - `corrupt(x) -> x_noisy` that changes x (denoising autoencoders): rows clean / noisy / denoised.
      - `reconstruct(x, y, stochastic=True, generator=g)`, decoding a draw z ~ q(z|x) instead of its mean:
        `num_stochastic` more rows, to show how much a VAE's reconstructions vary.
    """

    key = "reconstructions"

    def __init__(self, num_images: int = 8, num_stochastic: int = 0, every_n_epochs: int = 1, seed: int = 0) -> None:
        super().__init__(every_n_epochs, seed)
        if num_images < 1 or num_stochastic < 0:
            raise ValueError("num_images must be >= 1 and num_stochastic >= 0")
        self.num_images, self.num_stochastic = num_images, num_stochastic
        self.warned = False

    def make_figure(self, model: LightningModule, data: object) -> Figure:
        x, y = real_batch(data, self.num_images, model.device)
        noisy = x
        if hasattr(model, "corrupt"):
            with seeded(self.seed):  # the same noise every epoch
                noisy = model.corrupt(x)
        if noisy is not x and not torch.equal(noisy, x):  # every autoencoder has corrupt(); most return x itself
            rows, labels = [x, noisy, model.reconstruct(noisy, y)], ["clean", "noisy", "denoised"]
        else:
            rows, labels = [x, model.reconstruct(x, y)], ["original", "reconstruction"]
        if self.num_stochastic and accepts(model.reconstruct, "stochastic"):
            generator = torch.Generator().manual_seed(self.seed)  # CPU noise, as the model contract asks
            for k in range(self.num_stochastic):
                rows.append(model.reconstruct(noisy, y, stochastic=True, generator=generator))
                labels.append(f"z ~ q(z|x) #{k + 1}")
        elif self.num_stochastic and not self.warned:
            rank_zero_warn(f"Reconstructions(num_stochastic={self.num_stochastic}): {type(model).__name__}."
                           "reconstruct has no stochastic=True; showing deterministic reconstructions only")
            self.warned = True
        return grid_figure(stack_rows(rows), ncol=len(x), row_labels=labels, title="reconstructions")
