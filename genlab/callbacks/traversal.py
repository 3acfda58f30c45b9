"""`LatentTraversal`: change one latent dimension at a time and watch what the decoder does with it."""

import torch
from lightning import LightningModule
from matplotlib.figure import Figure
from torch import Tensor

from ..models.protocols import LatentModel
from .base import FigureCallback, accepts, decode_condition, real_batch
from .figures import grid_figure


def rank_dimensions(model: LatentModel, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, str]:
    """Latent dimensions, most informative first: (order, score per dimension, score name).

    Uses the model's optional `kl_per_dim(x[, y]) -> (latent_dim,)` (a VAE's KL per dimension: ~0 for dimensions
    the posterior collapsed onto the prior); without it, or when it raises TypeError (a model with no KL term, such
    as a plain autoencoder), the variance of the codes over the batch.
    """
    if hasattr(model, "kl_per_dim"):
        try:
            kl = model.kl_per_dim(x, y=y) if accepts(model.kl_per_dim, "y") else model.kl_per_dim(x)
            return torch.argsort(kl.float().cpu(), descending=True), kl.float().cpu(), "KL"
        except TypeError:
            pass
    scores, name = model.encode(x, y).float().var(dim=0).cpu(), "var"
    return torch.argsort(scores, descending=True), scores, name


def factor_correlations(codes: Tensor, factors: Tensor) -> Tensor:
    """|Pearson correlation| between every code dimension and every factor: (N, D), (N, F) -> (D, F)."""
    def standardize(t: Tensor) -> Tensor:
        t = t.float() - t.float().mean(dim=0)
        return t / t.norm(dim=0).clamp_min(1e-12)  # constant columns give 0, not NaN
    return (standardize(codes.cpu()).T @ standardize(factors.cpu())).abs()


class LatentTraversal(FigureCallback):
    """One row per latent dimension (the `num_dims` most informative, see `rank_dimensions`): that dimension set
    to `steps` values in [-span, span] while the others keep the code of one validation image.

    When the datamodule knows the true factors (`factor_names` and `val_factors(n)`, e.g. Shapes), each row is
    labelled with the factor its dimension correlates with most over `num_images` validation images.
    """

    key = "traversal"

    def __init__(self, num_dims: int = 8, span: float = 3.0, steps: int = 11, num_images: int = 256,
                 every_n_epochs: int = 1, seed: int = 0) -> None:
        super().__init__(every_n_epochs, seed)
        if num_dims < 1 or steps < 2 or span <= 0 or num_images < 1:
            raise ValueError("need num_dims >= 1, steps >= 2, span > 0 and num_images >= 1")
        self.num_dims, self.span, self.steps, self.num_images = num_dims, span, steps, num_images

    def make_figure(self, model: LightningModule, data: object) -> Figure:
        x, y = real_batch(data, self.num_images, model.device)
        order, scores, score_name = rank_dimensions(model, x, y)
        dims = order[: self.num_dims].tolist()
        base = model.encode(x[:1], y[:1])  # (1, D): the image every row starts from
        values = torch.linspace(-self.span, self.span, self.steps, device=base.device)
        z = base.repeat(len(dims), self.steps, 1)  # (rows, steps, D)
        for row, dim in enumerate(dims):
            z[row, :, dim] = values
        c = decode_condition(model, x[:1], y[:1])  # the start image's condition, for conditional models
        images = model.decode(z.flatten(0, 1), c.repeat_interleave(z.shape[0] * z.shape[1], dim=0))
        labels = [f"z{d} {score_name} {scores[d]:.2f}" for d in dims]
        if hasattr(data, "factor_names") and hasattr(data, "val_factors"):
            corr = factor_correlations(model.encode(x, y), data.val_factors(len(x)))[dims]
            best = corr.argmax(dim=1)
            labels = [f"{label} ~ {data.factor_names[f]} (|r| {corr[i, f]:.2f})"
                      for i, (label, f) in enumerate(zip(labels, best.tolist()))]
        title = f"traversal z_i in [{-self.span:g}, {self.span:g}], rows by {score_name}"
        return grid_figure(images, ncol=self.steps, row_labels=labels, title=title)
