"""`LatentSpace2D`: for 2-D latents, the codes and the decoder's picture of the same square, side by side."""

import torch
from lightning import LightningModule
from matplotlib.figure import Figure
from torchvision.utils import make_grid

from .base import FigureCallback, decode_condition, encoded, real_batch
from .draw import new_figure
from .latent_pca import legend, scatter_by_label


class LatentSpace2D(FigureCallback):
    """Left: codes of `num_points` validation images coloured by label. Right: a `grid` x `grid` mosaic of
    decodings of the grid points of [-span, span]^2, drawn on the same coordinates. `span` None: 3 (the prior's
    bulk), widened to the 98th percentile of |code| for models whose codes spread further (a plain AE's)."""

    key = "latent_2d"

    def __init__(self, num_points: int = 1000, grid: int = 15, span: float | None = None, every_n_epochs: int = 1,
                 seed: int = 0) -> None:
        super().__init__(every_n_epochs, seed)
        if num_points < 1 or grid < 2 or (span is not None and span <= 0):
            raise ValueError(f"need num_points >= 1, grid >= 2 and span > 0 (or None); got {num_points}, {grid}, "
                             f"{span}")
        self.num_points, self.grid, self.span = num_points, grid, span

    def check(self, model: object) -> None:
        super().check(model)
        if model.latent_dim != 2:
            raise TypeError(f"LatentSpace2D needs latent_dim == 2; {type(model).__name__} has {model.latent_dim}")

    def images_needed(self) -> int:
        return self.num_points

    def make_figure(self, model: LightningModule, data: object) -> Figure:
        x, y = real_batch(data, self.num_points, model.device)
        codes = encoded(model, data, x, y).float().cpu()
        span = self.span or max(3.0, float(codes.abs().quantile(0.98)))
        values = torch.linspace(-span, span, self.grid)
        # Image rows run top to bottom, so z2 must decrease down the mosaic to match the scatter's y axis.
        z2, z1 = torch.meshgrid(values.flip(0), values, indexing="ij")
        z = torch.stack([z1.flatten(), z2.flatten()], dim=1).to(model.device)
        c = decode_condition(model, x[:1], y[:1])  # conditional models: the whole grid under one condition
        images = model.decode(z, c.repeat_interleave(len(z), dim=0)).float().cpu().clamp(0, 1)
        mosaic = make_grid(images, nrow=self.grid, padding=0)
        extent = (-span, span, -span, span)

        fig = new_figure(11.0, 5.2)
        left, right = fig.subplots(1, 2, sharex=True, sharey=True)
        scatter_by_label(left, codes.numpy(), y, class_names=getattr(data, "class_names", None))
        left.set_title(f"codes of {len(x)} validation images", fontsize=10)
        legend(left)
        if images.shape[1] == 1:
            right.imshow(mosaic[0].numpy(), cmap="gray", vmin=0, vmax=1, extent=extent)
        else:
            right.imshow(mosaic.permute(1, 2, 0).numpy(), extent=extent)
        right.set_title(f"decoded {self.grid}x{self.grid} grid", fontsize=10)
        for ax in (left, right):
            ax.set_xlim(-span, span)
            ax.set_ylim(-span, span)
            ax.set_aspect("equal")
            ax.set_xlabel("z1")
        left.set_ylabel("z2")
        return fig
