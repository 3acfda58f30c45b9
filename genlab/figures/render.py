"""`render_from_checkpoint`: one figure from a saved model, without training (the `genlab plot` command)."""

from pathlib import Path

from lightning import LightningModule

from ..names import resolve_class
from .base import FigureCallback
from .codebook import CodebookProjection
from .conditional import ConditionalGrid
from .interpolation import LatentInterpolation
from .latent_pca import LatentPCA
from .latent_space_2d import LatentSpace2D
from .reconstructions import Reconstructions
from .sample_pca import SamplePCA
from .samples import SampleGrid
from .traversal import LatentTraversal

FIGURES: dict[str, type[FigureCallback]] = {cls.key: cls for cls in (
    SampleGrid, Reconstructions, LatentInterpolation, LatentTraversal, LatentPCA, LatentSpace2D, ConditionalGrid,
    CodebookProjection, SamplePCA)}


def render_from_checkpoint(ckpt_path: str | Path, datamodule: object, figure: str, out_dir: str | Path,
                           model_class: type[LightningModule] | str, **figure_args: object) -> Path:
    """Load `model_class` from `ckpt_path` on the CPU and write `<out_dir>/<figure>.png`; returns that path.

    `figure` is one of `FIGURES` ("samples", "reconstructions", "interpolation", "traversal", "latent_pca",
    "latent_2d", "conditional", "codebook"); `figure_args` go to that callback (e.g. `temperatures=(1.0, 20**0.5)`
    or `baseline_checkpoint=...`). `datamodule` needs
    `val_batch(n)` for every figure but "samples"; it is set up for "fit" here.
    """
    if figure not in FIGURES:
        raise ValueError(f"figure={figure!r} is unknown; choose one of {', '.join(FIGURES)}")
    model = resolve_class(model_class).load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    drawer = FIGURES[figure](**figure_args)
    drawer.check(model)
    if hasattr(datamodule, "setup"):
        datamodule.setup("fit")
    path = Path(out_dir) / f"{figure}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    drawer.draw(model, datamodule).savefig(path)
    return path
