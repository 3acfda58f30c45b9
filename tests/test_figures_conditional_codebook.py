"""ConditionalGrid and CodebookProjection: PNGs from tiny fits, rows that follow the condition, a codebook drawn
on the axes of its encoder outputs, and default_callbacks choosing them for the right models only."""

from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from lightning import LightningDataModule, LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from genlab.callbacks import (FIGURES, CodebookProjection, ConditionalGrid, default_callbacks,
                              render_from_checkpoint)
from genlab.figures.codebook import code_counts
from genlab.figures.conditional import condition_region
from genlab.figures.draw import log_figure, to_rgb_array
from genlab.models.presets import CVAE, VAE, BaselineNN, ConvVAE
from genlab.models.vqvae import VQVAE

SHAPE = (1, 16, 16)
TINY_VQ = dict(image_shape=SHAPE, num_hiddens=16, num_residual_hiddens=8, num_residual_layers=1, num_embeddings=16,
               embedding_dim=4)


class Digits(LightningDataModule):
    """Seeded random images with labels 0-3 and the figure API (`val_batch`, `num_classes`)."""

    image_shape, num_classes = SHAPE, 4

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(16, *SHAPE, generator=g), torch.arange(16) % 4

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=8)

    val_dataloader = train_dataloader

    def val_batch(self, n: int) -> tuple[Tensor, Tensor]:
        return self.x[:n], self.y[:n]


def fit(root: Path, model: LightningModule, callbacks: list) -> Trainer:
    trainer = Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
                      default_root_dir=root, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=callbacks)
    trainer.fit(model, datamodule=Digits())
    return trainer


def cvae(condition: str) -> CVAE:
    return CVAE(image_shape=SHAPE, latent_dim=2, hidden=(16,), condition=condition, num_classes=4)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object, LightningModule]]:
    """Tiny fits: a label CVAE, a quarter CVAE drawn beside a saved BaselineNN, and a VQ-VAE."""
    root = tmp_path_factory.mktemp("figures")
    baseline = fit(root / "baseline", BaselineNN(image_shape=SHAPE, hidden=(16,)), [])
    baseline.save_checkpoint(root / "baseline.ckpt")
    cases = {"label": (ConditionalGrid(num_samples=4), cvae("label")),
             "quarter": (ConditionalGrid(num_samples=3, num_conditions=4,
                                         baseline_checkpoint=str(root / "baseline.ckpt")), cvae("quarter")),
             "codebook": (CodebookProjection(num_images=8, num_points=200), VQVAE(**TINY_VQ))}
    out = {}
    for name, (callback, model) in cases.items():
        fit(root / name, model, [callback])
        out[name] = root / name / "figures" / callback.key / "epoch=000.png", callback, model
    return out


@pytest.mark.parametrize("name", ["label", "quarter", "codebook"])
def test_each_new_figure_is_a_png_of_its_own_size_with_content(runs, name):
    path, callback, model = runs[name]
    image = torch.from_numpy(matplotlib.image.imread(path))
    assert image.shape[0] >= 150 and image.shape[1] >= 150 and image.std() > 0.05
    fig = callback.draw(model, Digits())
    width, height = (fig.get_size_inches() * fig.dpi).round().astype(int)
    assert image.shape[:2] == (height, width)


def test_quarter_grid_has_condition_completions_baseline_and_truth_columns(runs):
    _, callback, model = runs["quarter"]
    ax = callback.draw(model, Digits()).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["condition", "#1", "#2", "#3", "baseline", "truth"]


class ShadeByLabel(nn.Module):
    """A label-conditioned stub: the decoded image is a flat grey of level y / 10 (plus a little of z)."""

    latent_dim, device, condition_kind = 2, torch.device("cpu"), "label"

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            raise ValueError("pass y")
        level = y.float().expand(len(z)) / 10 + 0.01 * z[:, 0].tanh()
        return level.view(-1, 1, 1, 1).expand(-1, *SHAPE)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return x.flatten(1)[:, :2]

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x), y)

    def sample(self, num_samples: int, y: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(torch.randn(num_samples, 2, generator=generator), y)


def test_conditional_rows_follow_the_class():
    grid = ConditionalGrid(num_samples=5)
    rows, classes = grid.label_rows(ShadeByLabel(), Digits())
    assert classes == [0, 1, 2, 3] and rows.shape == (4, 5, *SHAPE)
    levels = rows.mean((2, 3, 4))  # (class, column)
    assert torch.allclose(levels, torch.arange(4.0)[:, None] / 10, atol=0.011)  # row k is drawn under y = k
    assert torch.allclose(levels - levels[:1], levels[:, :1] - levels[:1, :1])  # same z down each column
    labels = [t.get_text() for t in grid.draw(ShadeByLabel(), Digits()).axes[0].get_yticklabels()]
    assert labels == ["y = 0", "y = 1", "y = 2", "y = 3"]


def test_condition_region_is_the_quarter_the_model_reads():
    model = cvae("quarter").eval()
    region = condition_region(model, Digits().x[:4])
    assert torch.equal(region, model.conditioner.mask(SHAPE))


def test_new_figures_reject_models_they_cannot_draw():
    vae = VAE(image_shape=SHAPE, latent_dim=2, hidden=(16,))
    with pytest.raises(TypeError, match="decodes without a condition"):
        ConditionalGrid().setup(None, vae, "fit")
    with pytest.raises(TypeError, match="VAE lacks encode_unquantized, codebook"):
        CodebookProjection().setup(None, vae, "fit")


class KnownCodebook(nn.Module):
    """A codebook stub: three codes, the third never nearest; z_e a 2x2 grid per image near the first two."""

    device = torch.device("cpu")
    codebook = torch.tensor([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 50.0]])

    def encode_unquantized(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        near = torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.2, 0.0], [3.9, 0.0, 0.0], [4.0, 0.3, 0.0]])
        return (near + 0.01 * x.flatten(1)[:, :1, None]).view(-1, 2, 2, 3).movedim(-1, 1)  # (B, 3, 2, 2)


def test_codebook_and_encoder_outputs_share_one_projection():
    fig = CodebookProjection(num_images=5, num_points=20).draw(KnownCodebook(), Digits())
    assert len(fig.axes) == 2  # the scatter and its colorbar
    ax = fig.axes[0]
    by_label = {c.get_label().split(" (")[0]: c.get_offsets() for c in ax.collections}
    assert set(by_label) == {"encoder outputs z_e", "codes in use", "unused codes"}
    assert len(by_label["encoder outputs z_e"]) == 20 and len(by_label["codes in use"]) == 2
    # PC1 runs from code 0 to code 1, along which the z_e lie: the same coordinates for both
    used = np.sort(by_label["codes in use"][:, 0])
    assert used[1] - used[0] == pytest.approx(4.0, abs=0.05)
    z_pc1 = by_label["encoder outputs z_e"][:, 0]
    assert used[0] - 0.3 < z_pc1.min() and z_pc1.max() < used[1] + 0.3
    assert "codes in use 2/3" in ax.get_title()


def test_code_counts_are_nearest_code_histograms():
    counts = code_counts(KnownCodebook.codebook, torch.tensor([[0.1, 0, 0], [3.0, 0, 0], [5.0, 0, 0]]))
    assert counts.tolist() == [1, 2, 0]


def names(model: object) -> list[str]:
    return [type(c).__name__ for c in default_callbacks(model)]


def test_default_callbacks_add_the_new_figures_only_where_they_fit():
    assert "ConditionalGrid" in names(cvae("label")) and "ConditionalGrid" in names(cvae("quarter"))
    assert names(BaselineNN(image_shape=SHAPE, hidden=(16,))) == ["SampleGrid", "ConditionalGrid", "LossCurves"]
    assert names(VQVAE(**TINY_VQ)) == ["Reconstructions", "CodebookProjection", "LossCurves"]
    for model in (VAE(image_shape=SHAPE, latent_dim=2, hidden=(16,)),
                  ConvVAE(image_shape=SHAPE, latent_dim=2, widths=(8,), batch_norm=True)):
        assert "ConditionalGrid" not in names(model) and "CodebookProjection" not in names(model)
    assert "CodebookProjection" not in names(cvae("label"))


def test_genlab_plot_can_render_both(runs, tmp_path):
    assert {"conditional", "codebook"} <= set(FIGURES)
    path, _, _ = runs["codebook"]
    ckpt = next((path.parents[2] / "checkpoints").glob("*.ckpt"))  # <run>/figures/codebook/epoch=000.png
    out = render_from_checkpoint(ckpt, Digits(), "codebook", tmp_path, "genlab.models.vqvae.VQVAE", num_images=4)
    assert out == tmp_path / "codebook.png" and matplotlib.image.imread(out).std() > 0.05


def test_logged_png_holds_the_exact_pixels(tmp_path):
    trainer = SimpleNamespace(logger=None, loggers=[], default_root_dir=str(tmp_path), current_epoch=3, global_step=0)
    image = torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(0))
    path = log_figure(trainer, "samples", image)  # written with fast (level 1) compression: lossless all the same
    assert path == tmp_path / "figures" / "samples" / "epoch=003.png"
    assert ((plt.imread(path)[..., :3] * 255).round() == to_rgb_array(image)).all()
