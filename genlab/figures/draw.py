"""Turning tensors into figures and figures into files: every figure callback ends in `log_figure`.

Figures are built with `matplotlib.figure.Figure` and drawn on an explicit Agg canvas, so nothing here changes
the user's pyplot backend or leaks figures into a notebook.
"""

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning import Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import make_grid

from ..io import atomic_path

DPI = 100
CELL_INCHES = 0.55  # one image tile; 28 px images come out about 2x enlarged, 16 px ones about 3.4x


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A figure on its own Agg canvas; constrained layout by default, so titles and labels are never clipped."""
    # Whole pixels: the PNG is then exactly figsize * dpi, however a backend rounds.
    width, height = round(width * DPI) / DPI, round(height * DPI) / DPI
    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def panel_figure(count: int, panel_width: float, panel_height: float) -> tuple[Figure, list[Axes]]:
    """A figure of `count` panels, up to three a row, and those panels' axes (spare grid cells hidden)."""
    ncol = min(3, count)
    nrow = math.ceil(count / ncol)
    fig = new_figure(panel_width * ncol, panel_height * nrow)
    axes = list(fig.subplots(nrow, ncol, squeeze=False).flatten())
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def run_dir(trainer: Trainer) -> Path:
    """The run folder, as `trainer.log_dir` would give it, but callable from rank zero alone.

    `trainer.log_dir` broadcasts, so calling it only on rank zero would hang a DDP run.
    """
    logger = trainer.logger
    if isinstance(logger, (TensorBoardLogger, CSVLogger)):
        return Path(logger.log_dir)
    if logger is not None and logger.save_dir:
        return Path(logger.save_dir)
    return Path(trainer.default_root_dir)


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an (H, W, 3) uint8 array at its own size and dpi."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def to_rgb_array(image: Tensor | np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W[, C]) image, float in [0, 1] or uint8, as (H, W, 3) uint8."""
    array = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)  # channels first (torch) -> channels last (PNG)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    return array


def log_figure(trainer: Trainer, key: str, figure_or_image: Figure | Tensor | np.ndarray) -> Path:
    """Save a PNG to `<run dir>/figures/<key>/epoch=NNN.png` and send it to every W&B / TensorBoard logger.

    The PNG is always written, so a CSV-only or logger-less run still has its pictures. A figure is closed
    afterwards. Returns the PNG's path. Call it on rank zero only.
    """
    if isinstance(figure_or_image, Figure):
        array = figure_to_array(figure_or_image)
        plt.close(figure_or_image)  # a no-op for our own figures; frees pyplot-made ones
    else:
        array = to_rgb_array(figure_or_image)
    path = run_dir(trainer) / "figures" / key / f"epoch={trainer.current_epoch:03d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # a kill mid-write leaves no empty or cut PNG
        # zlib level 1: the same pixels, ~10 % larger files, written 2-3x faster than the default level 6
        plt.imsave(tmp, array, format="png", pil_kwargs={"compress_level": 1})
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, array, trainer.global_step, dataformats="HWC")
    return path


def show_grid(ax: Axes, images: Tensor, ncol: int, row_labels: Sequence[str] = (), title: str = "") -> None:
    """Draw a batch (N, C, H, W) in [0, 1] as a grid of `ncol` columns on `ax`, one label per grid row."""
    images = images.detach().float().cpu().clamp(0, 1)
    pad = max(1, images.shape[-1] // 14)  # thin white gutters that scale with the image size
    grid = make_grid(images, nrow=ncol, padding=pad, pad_value=1.0)
    if images.shape[1] == 1:  # make_grid repeats one channel three times; show it as grey, not false colour
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    rows = math.ceil(len(images) / ncol)
    if row_labels:
        cell = images.shape[-2] + pad
        ax.set_yticks([pad + cell * (i + 0.5) for i in range(rows)], list(row_labels)[:rows])
        ax.tick_params(axis="y", length=0, labelsize=9)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)


def grid_size(images: Tensor, ncol: int, label_inches: float = 0.0) -> tuple[float, float]:
    """Figure (width, height) in inches for `show_grid`, keeping the tiles at CELL_INCHES and square pixels."""
    rows = math.ceil(len(images) / ncol)
    aspect = images.shape[-2] / images.shape[-1]
    return ncol * CELL_INCHES + label_inches + 0.3, rows * CELL_INCHES * aspect + 0.6


def grid_figure(images: Tensor, ncol: int, row_labels: Sequence[str] = (), title: str = "") -> Figure:
    """One image grid as a figure: `ncol` tiles per row, optional row labels on the left and a title."""
    # Placed by hand in inches: constrained layout centres a fixed-aspect image and can push long labels off the
    # left edge; a measured margin keeps every label whole and the tiles at CELL_INCHES.
    label_in = 0.075 * max((len(label) for label in row_labels), default=0) + 0.2
    title_in, margin = (0.35 if title else 0.0) + 0.1, 0.1
    grid_w, grid_h = grid_size(images, ncol)
    grid_w, grid_h = grid_w - 0.3, grid_h - 0.6  # the bare tiles, without grid_size's decoration allowance
    width, height = label_in + grid_w + margin, title_in + grid_h + margin
    fig = new_figure(width, height, layout=None)
    width, height = fig.get_size_inches()  # rounded to whole pixels
    ax = fig.add_axes((label_in / width, margin / height, grid_w / width, grid_h / height))
    show_grid(ax, images, ncol, row_labels, title)
    return fig


def stack_rows(rows: Sequence[Tensor]) -> Tensor:
    """Concatenate equally long rows of images (each (K, C, H, W)) into one batch for `show_grid`."""
    return torch.cat([row.detach().float().cpu() for row in rows])
