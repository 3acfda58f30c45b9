"""`ConditionalGrid`: what a conditional model makes of each condition, a class label or part of an image."""

import torch
from lightning import LightningModule
from matplotlib.figure import Figure
from torch import Tensor

from ..models.protocols import Sampler
from ..names import resolve_class
from .base import FigureCallback, condition_kind, real_batch
from .draw import grid_figure, stack_rows
from .latent_pca import class_name

OUTSIDE_GREY = 0.5  # fills what the model does not see in the "condition" column: neither ink nor background


def condition_region(model: object, images: Tensor) -> Tensor:
    """(C, H, W) mask, 1 where `decode(z, y=images)` reads the condition images: the pixels with a gradient.

    Found through the protocol alone, so any image-conditioned model (a quarter, a half, a mask) is shown right.
    """
    z = torch.zeros(len(images), model.latent_dim, device=images.device)
    y = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(model.decode(z, y).sum(), y, allow_unused=True)
    if grad is None or not grad.any():  # decode ignores the pixels: show the whole condition
        return torch.ones(images.shape[1:], device=images.device)
    return (grad.abs().sum(0) > 0).float()


class ConditionalGrid(FigureCallback):
    """Samples of a conditional model per condition.

    Label-conditioned models: one row per class (0 to num_classes - 1, named by the datamodule's `class_names` when
    it has them), `num_samples` columns; every row decodes the same prior draws, so a column keeps its style while
    the class changes. Image-conditioned models (e.g.
    `CVAE(condition="quarter")`): one row per validation image, with the condition (the region the model reads;
    the rest grey), `num_samples` completions, the prediction of a `BaselineNN` when `baseline_checkpoint` is
    given, and the truth.

    Which kind a model is comes from its `condition_kind` (the `Conditional` protocol); the number of classes from
    `num_classes`, else the datamodule's `num_classes`, else the labels of the validation batch.
    """

    key = "conditional"
    requires = Sampler

    def __init__(self, num_samples: int = 8, num_conditions: int = 6, num_classes: int | None = None,
                 baseline_checkpoint: str | None = None, baseline_class: str = "genlab.models.presets.BaselineNN",
                 every_n_epochs: int = 1, seed: int = 0) -> None:
        super().__init__(every_n_epochs, seed)
        if num_samples < 1 or num_conditions < 1 or (num_classes is not None and num_classes < 1):
            raise ValueError(f"num_samples={num_samples}, num_conditions={num_conditions} and num_classes="
                             f"{num_classes} must be >= 1")
        self.num_samples, self.num_conditions, self.num_classes = num_samples, num_conditions, num_classes
        self.baseline_checkpoint, self.baseline_class = baseline_checkpoint, baseline_class
        self.baseline: LightningModule | None = None

    def check(self, model: object) -> None:
        super().check(model)
        if condition_kind(model) is None:
            raise TypeError(f"ConditionalGrid needs a conditional model (one whose decode needs y); "
                            f"{type(model).__name__} decodes without a condition")

    def make_figure(self, model: LightningModule, data: object) -> Figure:
        if condition_kind(model) == "label":
            return self.label_figure(model, data)
        return self.image_figure(model, data)

    def draws(self, model: LightningModule, n: int, y: Tensor) -> Tensor:
        """n samples under condition y (one label or one image), from the same noise every call."""
        return model.sample(n, y, generator=torch.Generator().manual_seed(self.seed))

    def columns(self, model: LightningModule) -> int:
        return 1 if model.latent_dim == 0 else self.num_samples  # no latent: every draw is the same image

    def baseline_predictions(self, y: Tensor) -> Tensor | None:
        """The baseline's image for each condition in y, or None without `baseline_checkpoint`."""
        if self.baseline_checkpoint is None:
            return None
        if self.baseline is None:
            self.baseline = resolve_class(self.baseline_class).load_from_checkpoint(self.baseline_checkpoint,
                                                                                    map_location="cpu",
                                                                                    weights_only=True).eval()
        self.baseline.to(y.device)
        try:
            with torch.no_grad():
                return torch.cat([self.draws(self.baseline, 1, c[None]) for c in y])
        except ValueError as error:
            raise ValueError(f"baseline_checkpoint={self.baseline_checkpoint!r} does not take this model's kind of "
                             f"condition: {error}") from error

    def images_needed(self) -> int:
        return max(256, self.num_conditions)

    def class_count(self, model: LightningModule, data: object) -> int:
        for count in (self.num_classes, getattr(data, "num_classes", None), getattr(model, "num_classes", None)):
            if count:
                return int(count)
        _, y = data.val_batch(256)
        return int(y.max()) + 1

    def label_rows(self, model: LightningModule, data: object) -> tuple[Tensor, list[int]]:
        """Samples (num_classes, columns, C, H, W), row k drawn under y = k, and the classes."""
        classes = torch.arange(self.class_count(model, data), device=model.device)
        rows = torch.stack([self.draws(model, self.columns(model), k[None]) for k in classes])
        return rows, classes.tolist()

    def label_figure(self, model: LightningModule, data: object) -> Figure:
        rows, classes = self.label_rows(model, data)
        ncol = rows.shape[1]
        title = f"{ncol} samples per class, same z in each column" if ncol > 1 else "prediction per class"
        baseline = self.baseline_predictions(torch.tensor(classes, device=rows.device))
        if baseline is not None:
            rows = torch.cat([rows, baseline[:, None]], dim=1)
            title += "; last column: baseline"
        names = getattr(data, "class_names", None)
        labels = [f"y = {k}" if names is None else class_name(k, names) for k in classes]
        fig = grid_figure(stack_rows(list(rows)), ncol=rows.shape[1], row_labels=labels, title=title)
        fit_title(fig, [title, "per class"])
        return fig

    def image_figure(self, model: LightningModule, data: object) -> Figure:
        x, _ = real_batch(data, self.num_conditions, model.device)
        mask = condition_region(model, x)
        shown = x * mask + OUTSIDE_GREY * (1 - mask)
        ncol = self.columns(model)
        rows, headers = [], ["condition"] + ([f"#{k + 1}" for k in range(ncol)] if ncol > 1 else ["prediction"])
        baseline = self.baseline_predictions(x)
        for i in range(len(x)):
            row = [shown[i:i + 1], self.draws(model, ncol, x[i:i + 1])]
            if baseline is not None:
                row.append(baseline[i:i + 1])
            rows.append(torch.cat(row + [x[i:i + 1]]))
        headers += (["baseline"] if baseline is not None else []) + ["truth"]
        kind = f"{ncol} completions" if ncol > 1 else "prediction"
        extra = ", baseline" if baseline is not None else ""
        fig = grid_figure(stack_rows(rows), ncol=len(headers), title="condition")  # reserves the title row
        fit_title(fig, [f"condition (grey: not seen by the model), {kind}{extra}, truth", "grey: not seen by the model",
                        "grey: not seen"])
        label_columns(fig, x.shape[-1], headers)
        return fig


def fit_title(fig: Figure, titles: list[str]) -> None:
    """The first of `titles` that fits the figure's width (a narrow grid gets a shorter one, never a clipped one)."""
    ax, renderer = fig.axes[0], fig.canvas.get_renderer()
    for title in titles:
        text = ax.set_title(title, fontsize=10)
        if text.get_window_extent(renderer).width <= 0.98 * fig.bbox.width:
            return


def label_columns(fig: Figure, width: int, headers: list[str]) -> None:
    """Column headers above a `grid_figure` grid whose tiles are `width` pixels wide."""
    ax = fig.axes[0]
    pad = max(1, width // 14)  # show_grid's gutter
    ax.set_xticks([pad + (width + pad) * (i + 0.5) for i in range(len(headers))], headers)
    ax.tick_params(axis="x", length=0, labelsize=7, top=True, labeltop=True, bottom=False, labelbottom=False)
