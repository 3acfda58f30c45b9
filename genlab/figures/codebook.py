"""`CodebookProjection`: a VQ-VAE's codebook and the encoder outputs it should cover, in one 2-D PCA."""

import numpy as np
import torch
from lightning import LightningModule
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, NullFormatter
from torch import Tensor

from ..models.protocols import CodebookModel
from .base import FigureCallback, real_batch
from .draw import new_figure
from .latent_pca import PCA2


def code_counts(codebook: Tensor, vectors: Tensor) -> Tensor:
    """How many of `vectors` (N, D) have each code (K, D) as their nearest: the codebook's usage, (K,)."""
    nearest = torch.cdist(vectors.float(), codebook.float()).argmin(dim=1)
    return torch.bincount(nearest, minlength=len(codebook))


class CodebookProjection(FigureCallback):
    """Codebook vectors over a sample of encoder outputs z_e, projected on the top two principal axes of z_e.

    The z_e come from `num_images` validation images (every position of their code grids; `num_points` of them
    are drawn, seeded). Codes are coloured and sized by how many of all those vectors they quantise; unused
    (dead) codes are red crosses. The title gives the fraction of codes in use and the perplexity of their
    histogram, the numbers a collapsed codebook gives away.
    """

    key = "codebook"
    requires = CodebookModel

    def __init__(self, num_images: int = 64, num_points: int = 2000, every_n_epochs: int = 1, seed: int = 0) -> None:
        super().__init__(every_n_epochs, seed)
        if num_images < 1 or num_points < 2:
            raise ValueError(f"num_images={num_images} must be >= 1 and num_points={num_points} >= 2")
        self.num_images, self.num_points = num_images, num_points

    def images_needed(self) -> int:
        return self.num_images

    def make_figure(self, model: LightningModule, data: object) -> Figure:
        x, y = real_batch(data, self.num_images, model.device)
        z_e = model.encode_unquantized(x, y).float()
        vectors = z_e.movedim(1, -1).reshape(-1, z_e.shape[1]).cpu()  # (B * H' * W', D)
        codebook = model.codebook.float().cpu()
        counts = code_counts(codebook, vectors)
        probs = counts.float() / counts.sum()
        perplexity = torch.exp(-torch.special.xlogy(probs, probs).sum()).item()
        keep = torch.randperm(len(vectors), generator=torch.Generator().manual_seed(self.seed))[:self.num_points]
        pca = PCA2(vectors[keep])
        fig = new_figure(7.0, 5.2)
        ax = fig.add_subplot()
        ax.scatter(*pca.project(vectors[keep]).T, s=4, color="0.6", alpha=0.4, linewidths=0,
                   label=f"encoder outputs z_e ({len(keep)})", zorder=1)
        self.draw_codes(ax, pca.project(codebook), counts.numpy())
        pca.label_axes(ax)
        used = int((counts > 0).sum())
        ax.set_title(f"codebook vs encoder outputs (PCA of z_e), {len(x)} validation images\n"
                     f"codes in use {used}/{len(codebook)} ({100 * used / len(codebook):.0f}%), "
                     f"perplexity {perplexity:.1f}", fontsize=10)
        # Below the axes: the colorbar takes the right-hand side, and inside the legend would hide points.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False,
                  markerscale=1.5)
        return fig

    @staticmethod
    def draw_codes(ax: object, points: np.ndarray, counts: np.ndarray) -> None:
        used = counts > 0
        if used.any():
            sizes = 10 + 50 * np.sqrt(counts[used] / counts.max())
            # Log colours when counts span decades (a few codes take most vectors in a collapsing codebook).
            norm = LogNorm(1, counts.max()) if counts.max() >= 20 else Normalize(0, max(1, counts.max()))
            dots = ax.scatter(*points[used].T, s=sizes, c=counts[used], cmap="viridis", norm=norm,
                              edgecolors="black", linewidths=0.4, label=f"codes in use ({used.sum()})", zorder=3)
            bar = ax.figure.colorbar(dots, ax=ax, label="vectors quantised to the code", pad=0.02)
            bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            bar.ax.yaxis.set_minor_formatter(NullFormatter())
        if (~used).any():
            ax.scatter(*points[~used].T, s=18, marker="x", color="tab:red", linewidths=0.8,
                       label=f"unused codes ({(~used).sum()})", zorder=2)
