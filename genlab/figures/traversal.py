"""`LatentTraversal`: change one latent dimension at a time and watch what the decoder does with it."""

import torch
from lightning import LightningModule
from matplotlib.figure import Figure
from torch import Tensor

from ..models.protocols import KLPerDimension, LatentModel
from .base import FigureCallback, decode_condition, encoded, real_batch
from .draw import grid_figure


def rank_dimensions(model: LatentModel, x: Tensor, y: Tensor | None = None,
                    codes: Tensor | None = None) -> tuple[Tensor, Tensor, str]:
    """Latent dimensions, most informative first: (order, score per dimension, score name).

    A `KLPerDimension` model with `has_kl_per_dim` is ranked by its KL per dimension (~0 for dimensions the
    posterior collapsed onto the prior); any other (a plain autoencoder, a VQ-VAE, a learned prior) by the variance
    of its codes over the batch (`codes`, when given, are `model.encode(x, y)` already computed).
    """
    if isinstance(model, KLPerDimension) and model.has_kl_per_dim:
        kl = model.kl_per_dim(x, y).float().cpu()
        return torch.argsort(kl, descending=True), kl, "KL"
    codes = model.encode(x, y) if codes is None else codes
    scores, name = codes.float().var(dim=0).cpu(), "var"
    return torch.argsort(scores, descending=True), scores, name


def factor_correlations(codes: Tensor, factors: Tensor) -> Tensor:
    """|Pearson correlation| between every code dimension and every factor: (N, D), (N, F) -> (D, F)."""
    def standardize(t: Tensor) -> Tensor:
        t = t.float() - t.float().mean(dim=0)
        return t / t.norm(dim=0).clamp_min(1e-12)  # constant columns give 0, not NaN
    return (standardize(codes.cpu()).T @ standardize(factors.cpu())).abs()


class LatentTraversal(FigureCallback):
    """One row per latent dimension: that dimension set to `steps` values in [-span, span] while the others keep
    the code of validation image number `start`.

    Args:
        num_dims: rows to draw.
        dims: which dimensions: "ranked" (the most informative first, see `rank_dimensions`), "even" (evenly
            spaced over 0..latent_dim-1) or an explicit list of dimension indices.
        start: index of the validation image whose code every row starts from.

    When the datamodule knows the true factors (`factor_names` and `val_factors(n)`, e.g. Shapes), each row is
    labelled with the factor its dimension correlates with most over `num_images` validation images.
    """

    key = "traversal"

    def __init__(self, num_dims: int = 8, span: float = 3.0, steps: int = 11, num_images: int = 256,
                 dims: str | list[int] = "ranked", start: int = 0, every_n_epochs: int = 1, seed: int = 0) -> None:
        super().__init__(every_n_epochs, seed)
        if num_dims < 1 or steps < 2 or span <= 0 or num_images < 1 or start < 0:
            raise ValueError("need num_dims >= 1, steps >= 2, span > 0, num_images >= 1 and start >= 0")
        if isinstance(dims, str) and dims not in ("ranked", "even"):
            raise ValueError(f"dims={dims!r} is unknown; choose ranked, even or a list of dimension indices")
        self.num_dims, self.span, self.steps, self.num_images = num_dims, span, steps, num_images
        self.dims, self.start = dims, start

    def images_needed(self) -> int:
        return max(self.num_images, self.start + 1)

    def chosen_dims(self, order: Tensor, latent_dim: int) -> list[int]:
        if self.dims == "ranked":
            return order[: self.num_dims].tolist()
        if self.dims == "even":
            return torch.linspace(0, latent_dim - 1, min(self.num_dims, latent_dim)).round().long().unique().tolist()
        bad = [d for d in self.dims if not 0 <= d < latent_dim]
        if bad:
            raise ValueError(f"dims {bad} are outside 0..{latent_dim - 1} (latent_dim {latent_dim})")
        return list(self.dims)

    def make_figure(self, model: LightningModule, data: object) -> Figure:
        x, y = real_batch(data, max(self.num_images, self.start + 1), model.device)
        if self.start >= len(x):
            raise ValueError(f"start={self.start} but the data has only {len(x)} images")
        factors = hasattr(data, "factor_names") and hasattr(data, "val_factors")
        kl_ranked = isinstance(model, KLPerDimension) and model.has_kl_per_dim
        codes = encoded(model, data, x, y) if factors or not kl_ranked else None  # encoded once for both uses
        order, scores, score_name = rank_dimensions(model, x, y, codes)
        dims = self.chosen_dims(order, model.latent_dim)
        first = slice(self.start, self.start + 1)
        base = model.encode(x[first], y[first])  # (1, D): the image every row starts from
        values = torch.linspace(-self.span, self.span, self.steps, device=base.device)
        z = base.repeat(len(dims), self.steps, 1)  # (rows, steps, D)
        for row, dim in enumerate(dims):
            z[row, :, dim] = values
        c = decode_condition(model, x[first], y[first])  # the start image's condition, for conditional models
        images = model.decode(z.flatten(0, 1), c.repeat_interleave(z.shape[0] * z.shape[1], dim=0))
        labels = [f"z{d} {score_name} {scores[d]:.2f}" for d in dims]
        if factors:
            corr = factor_correlations(codes, data.val_factors(len(x)))[dims]
            best = corr.argmax(dim=1)
            labels = [f"{label} ~ {data.factor_names[f]} (|r| {corr[i, f]:.2f})"
                      for i, (label, f) in enumerate(zip(labels, best.tolist()))]
        title = f"traversal z_i in [{-self.span:g}, {self.span:g}], rows by {score_name}"
        return grid_figure(images, ncol=self.steps, row_labels=labels, title=title)
