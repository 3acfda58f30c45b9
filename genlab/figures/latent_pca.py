"""Latent codes seen from above: a 2-D PCA of the codes of validation images, coloured by label."""

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import torch
from lightning import LightningModule
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from ..models.protocols import LatentModel
from .base import FigureCallback, encoded, evaluating, real_batch
from .draw import new_figure

MAX_LEGEND_CLASSES = 10  # up to here a discrete legend reads better than a colorbar
MARKERS = ("o", "^", "s", "D", "v", "P")


class PCA2:
    """The top two principal axes of a set of codes (N, D); `project` maps any codes onto them."""

    def __init__(self, codes: Tensor) -> None:
        codes = pad_to_2d(codes.detach().float().cpu())
        self.mean = codes.mean(dim=0)
        _, s, vh = torch.linalg.svd(codes - self.mean, full_matrices=False)
        self.axes = vh[:2].T  # (D, 2)
        self.explained = (s[:2] ** 2 / (s**2).sum().clamp_min(1e-12)).tolist()

    def project(self, codes: Tensor) -> np.ndarray:
        return ((pad_to_2d(codes.detach().float().cpu()) - self.mean) @ self.axes).numpy()

    def label_axes(self, ax: Axes) -> None:
        ax.set_xlabel(f"PC1 ({100 * self.explained[0]:.0f}% of variance)")
        ax.set_ylabel(f"PC2 ({100 * self.explained[1]:.0f}% of variance)")


def pad_to_2d(codes: Tensor) -> Tensor:
    # A 1-D latent still gets a plot: its second axis is all zeros.
    return torch.cat([codes, torch.zeros_like(codes)], dim=1) if codes.shape[1] < 2 else codes


def class_name(label: int, class_names: Sequence[str] | None) -> str:
    """What label k is called in a legend: the dataset's class name when it has one, else k itself."""
    return class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)


def scatter_by_label(ax: Axes, points: np.ndarray, labels: Tensor | None, name: str = "", marker: str = "o",
                     class_names: Sequence[str] | None = None) -> None:
    """Scatter 2-D points coloured by integer label, named by `class_names` in the legend; one colour when all
    labels are equal (or there are none)."""
    size = 10 if len(points) < 2000 else 4
    if labels is None or labels.unique().numel() < 2:
        ax.scatter(*points.T, s=size, alpha=0.7, marker=marker, label=name or None)
        return
    labels = labels.cpu().numpy()
    classes = np.unique(labels)
    if len(classes) <= MAX_LEGEND_CLASSES:
        cmap = matplotlib.colormaps["tab10"]
        for c in classes:
            keep = labels == c
            ax.scatter(*points[keep].T, s=size, alpha=0.7, marker=marker, color=cmap(int(c) % 10),
                       label=f"{name} {class_name(int(c), class_names)}".strip())
    else:
        dots = ax.scatter(*points.T, c=labels, s=size, alpha=0.7, marker=marker, cmap="viridis")
        ax.figure.colorbar(dots, ax=ax, label="label")


def prior_overlay(ax: Axes, pca: PCA2, latent_dim: int, num_points: int, seed: int) -> None:
    """N(0, I) draws through the same projection, in grey underneath: where the decoder expects codes to be."""
    z = torch.randn(num_points, latent_dim, generator=torch.Generator().manual_seed(seed))
    ax.scatter(*pca.project(z).T, s=6, color="0.75", alpha=0.5, label="N(0, I)", zorder=0)
    # PCA centres on the codes' mean, so mark where z = 0 lands: codes far from it are off the prior.
    ax.scatter(*pca.project(torch.zeros(1, latent_dim)).T, s=40, marker="+", color="black", label="z = 0", zorder=3)


def legend(ax: Axes) -> None:
    """Legend outside the axes, right of them: inside, it would hide points (constrained layout makes room)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, markerscale=2, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


class LatentPCA(FigureCallback):
    """2-D PCA of the codes of `num_points` validation images, coloured by label, optionally over N(0, I) draws
    projected the same way (how well do the codes fill the prior?)."""

    key = "latent_pca"

    def __init__(self, num_points: int = 1000, overlay_prior: bool = True, every_n_epochs: int = 1,
                 seed: int = 0) -> None:
        super().__init__(every_n_epochs, seed)
        if num_points < 2:
            raise ValueError(f"num_points must be >= 2, got {num_points}")
        self.num_points, self.overlay_prior = num_points, overlay_prior

    def images_needed(self) -> int:
        return self.num_points

    def make_figure(self, model: LightningModule, data: object) -> Figure:
        x, y = real_batch(data, self.num_points, model.device)
        codes = encoded(model, data, x, y)
        pca = PCA2(codes)
        # Placed by hand, room for the legend measured from its labels: constrained layout would cost half the
        # figure's drawing time every epoch.
        class_names = getattr(data, "class_names", None)
        # the legend lists up to MAX_LEGEND_CLASSES classes (more get a colorbar, which makes its own room)
        classes = [] if y is None or y.unique().numel() > MAX_LEGEND_CLASSES else y.unique().tolist()
        legend_in = 0.45 + 0.07 * max([len(class_name(int(c), class_names)) for c in classes] + [len("N(0, I)")])
        fig = new_figure(6.8, 5.0, layout=None)
        left, bottom, top = 0.8, 0.6, 0.4
        ax = fig.add_axes((left / 6.8, bottom / 5.0, (6.8 - left - legend_in) / 6.8, (5.0 - bottom - top) / 5.0))
        if self.overlay_prior:
            prior_overlay(ax, pca, model.latent_dim, len(x), self.seed)
        scatter_by_label(ax, pca.project(codes), y, class_names=class_names)
        pca.label_axes(ax)
        # A fixed title height (y): matplotlib's automatic one measures every tick label again.
        ax.set_title(f"latent PCA of {len(x)} validation codes (latent_dim {model.latent_dim})", fontsize=10, y=1.01)
        legend(ax)
        return fig


def compare_latent_pca(models: Mapping[str, LatentModel], x: Tensor, y: Tensor | None = None,
                       overlay_prior: bool = True, seed: int = 0, class_names: Sequence[str] | None = None) -> Figure:
    """Codes of the same images under two or more models, one panel each plus one overlapping them all.

    One PCA is fitted on the union of all codes, and every panel shares its axes, so positions and spreads are
    directly comparable (e.g. an AE's unconstrained codes against a VAE's near-N(0, I) ones).
    """
    if len(models) < 2:
        raise ValueError("compare_latent_pca needs at least two models")
    dims = {name: model.latent_dim for name, model in models.items()}
    if len(set(dims.values())) != 1:
        raise ValueError(f"one shared PCA needs equal latent sizes, got {dims}")
    codes = {}
    for name, model in models.items():
        device = getattr(model, "device", x.device)
        with evaluating(model):
            codes[name] = model.encode(x.to(device), None if y is None else y.to(device)).cpu()
    pca = PCA2(torch.cat(list(codes.values())))
    fig = new_figure(4.2 * (len(models) + 1), 4.4)
    axes = fig.subplots(1, len(models) + 1, sharex=True, sharey=True)
    for i, (ax, (name, z)) in enumerate(zip(axes, codes.items())):
        if overlay_prior:
            prior_overlay(ax, pca, next(iter(dims.values())), len(x), seed)
        scatter_by_label(ax, pca.project(z), y, class_names=class_names)
        ax.set_title(name, fontsize=10)
        # Overlap panel: one colour per model, so the clouds (not the classes) are told apart.
        axes[-1].scatter(*pca.project(z).T, s=6, alpha=0.5, marker=MARKERS[i % len(MARKERS)], label=name)
    axes[-1].set_title("overlap", fontsize=10)
    legend(axes[0])
    legend(axes[-1])
    for ax in axes:
        pca.label_axes(ax)
        ax.label_outer()
    return fig
