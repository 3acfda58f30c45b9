"""Figure callbacks: each writes a readable PNG in a tiny fit, reaches W&B and TensorBoard, and draws what it says
(interpolation and traversal in test_figures_interpolation_traversal.py, the conditional and codebook figures in
test_figures_conditional_codebook.py)."""

import glob
from pathlib import Path

import matplotlib.image
import pytest
import torch
from lightning import LightningModule, Trainer
from torch import Tensor, nn
from tiny_data import SHAPE, TinyImages

from genlab.callbacks import (FIGURES, LatentInterpolation, LatentPCA, LatentSpace2D, LatentTraversal, LossCurves,
                              Reconstructions, SampleGrid, compare_latent_pca, default_callbacks,
                              render_from_checkpoint)
from genlab.models import ConvVAE
from genlab.models.blocks import GaussianNoise



def tiny_vae(latent_dim: int = 4) -> ConvVAE:
    return ConvVAE(image_shape=SHAPE, latent_dim=latent_dim, widths=(8, 16))


def fit(tmp_path: Path, model: LightningModule, callbacks: list, logger: object = False) -> Trainer:
    trainer = Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=logger,
                      default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=callbacks)
    trainer.fit(model, datamodule=TinyImages())
    return trainer


def small_callbacks() -> list:
    return [SampleGrid(num_samples=8, temperatures=(1.0, 20**0.5)), Reconstructions(num_images=4),
            LatentInterpolation(num_pairs=2, steps=5, mode="slerp"),
            LatentTraversal(num_dims=4, steps=5, num_images=16),
            LatentPCA(num_points=16), LossCurves()]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LightningModule, list]:
    """One tiny fit with every callback (and a 2-D model for LatentSpace2D): shared by the PNG checks."""
    root = tmp_path_factory.mktemp("run")
    callbacks = small_callbacks()
    model = tiny_vae()
    fit(root, model, callbacks)
    fit(root / "two_d", tiny_vae(latent_dim=2), [LatentSpace2D(num_points=16, grid=5)])
    return root, model, callbacks


def read_png(path: Path) -> Tensor:
    return torch.from_numpy(matplotlib.image.imread(path))


@pytest.mark.parametrize("key", ["samples", "reconstructions", "interpolation", "traversal", "latent_pca",
                                 "loss_curves", "latent_2d"])
def test_each_callback_writes_a_readable_png(run, key):
    root, model, callbacks = run
    folder = root / "two_d" if key == "latent_2d" else root
    paths = sorted((folder / "figures" / key).glob("epoch=*.png"))
    assert [p.name for p in paths] == ["epoch=000.png" if key != "loss_curves" else "epoch=001.png"]
    image = read_png(paths[0])
    assert image.shape[0] >= 150 and image.shape[1] >= 150 and image.std() > 0.05
    drawer = next((c for c in callbacks if getattr(c, "key", None) == key), None)
    if drawer is not None and key != "loss_curves":  # the PNG has the figure's own pixel size: nothing cropped
        fig = drawer.draw(model, TinyImages())
        width, height = (fig.get_size_inches() * fig.dpi).round().astype(int)
        assert image.shape[:2] == (height, width)


def test_loss_curves_record_train_and_val_terms(run):
    curves = next(c for c in run[2] if isinstance(c, LossCurves))
    assert {"loss", "recon", "kl"} <= set(curves.history)
    assert len(curves.history["loss"]["train"]) == 2 and len(curves.history["loss"]["val"]) == 1
    assert "mse" in curves.history and "train" not in curves.history["mse"]


def test_wandb_offline_run_holds_the_image(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(offline=True, save_dir=str(tmp_path))
    try:
        fit(tmp_path, tiny_vae(), [SampleGrid(num_samples=4)], logger)
    finally:
        wandb.finish()
    assert glob.glob(str(tmp_path / "wandb" / "**" / "samples*.png"), recursive=True)
    assert (tmp_path / "figures" / "samples" / "epoch=000.png").exists()  # the PNG copy too


def test_tensorboard_event_file_holds_the_image(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    logger = TensorBoardLogger(tmp_path, name="tb")
    fit(tmp_path, tiny_vae(), [Reconstructions(num_images=4)], logger)
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "reconstructions" in events.Tags()["images"]
    assert (Path(logger.log_dir) / "figures" / "reconstructions" / "epoch=000.png").exists()


class NoisyVAE(ConvVAE):
    """A denoising variant: what the encoder sees is corrupted."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.corruption = GaussianNoise(0.3)


def row_labels(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_yticklabels()]


def test_reconstructions_show_denoising_rows_and_posterior_draws():
    model = NoisyVAE(image_shape=SHAPE, latent_dim=4, widths=(8, 16))
    fig = Reconstructions(num_images=4, num_stochastic=2).draw(model, TinyImages())
    assert row_labels(fig) == ["clean", "noisy", "denoised", "z ~ q(z|x) #1", "z ~ q(z|x) #2"]
    assert row_labels(Reconstructions(num_images=4).draw(tiny_vae(), TinyImages())) == ["original", "reconstruction"]


def test_compare_latent_pca_shares_axes_between_models():
    x, y = torch.rand(12, *SHAPE), torch.arange(12) % 3
    fig = compare_latent_pca({"a": tiny_vae(), "b": tiny_vae()}, x, y)
    first, second, overlap = fig.axes[:3]
    assert first.get_shared_x_axes().joined(first, second) and first.get_shared_y_axes().joined(first, overlap)
    assert [t.get_text() for t in overlap.get_legend().get_texts()] == ["a", "b"]


class NoLatent(LightningModule):
    def sample(self, num_samples: int, y: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        return torch.rand(num_samples, *SHAPE, generator=generator)


def test_setup_rejects_a_model_without_the_protocol():
    with pytest.raises(TypeError, match="NoLatent lacks encode, decode, reconstruct, latent_dim"):
        LatentTraversal().setup(None, NoLatent(), "fit")
    with pytest.raises(TypeError, match="temperature"):  # every Sampler takes one: no signature is read at setup
        SampleGrid(temperatures=(1.0, 2.0)).draw(NoLatent(), TinyImages())
    with pytest.raises(TypeError, match="latent_dim == 2"):
        LatentSpace2D().setup(None, tiny_vae(), "fit")


def test_latent_space_2d_widens_to_where_the_codes_are():
    class Spread(nn.Module):  # a 2-D "autoencoder" whose codes reach about +-10, as a plain AE's do
        latent_dim, device = 2, torch.device("cpu")

        def encode(self, x, y=None):
            return 10 * torch.tanh(x.flatten(1)[:, :2] * 4 - 2)

        def decode(self, z, y=None):
            return torch.sigmoid(z.sum(1)).view(-1, 1, 1, 1).expand(-1, *SHAPE)

        def reconstruct(self, x, y=None):
            return self.decode(self.encode(x))

    wide = LatentSpace2D(num_points=16, grid=3).draw(Spread(), TinyImages()).axes[0].get_xlim()
    fixed = LatentSpace2D(num_points=16, grid=3, span=3.0).draw(Spread(), TinyImages()).axes[0].get_xlim()
    assert wide[1] > 5 and fixed == (-3.0, 3.0)


def test_default_callbacks_fit_the_model():
    names = lambda model: [type(c).__name__ for c in default_callbacks(model)]  # noqa: E731
    assert names(NoLatent()) == ["SampleGrid", "LossCurves"]
    assert names(tiny_vae()) == ["SampleGrid", "Reconstructions", "LatentInterpolation", "LatentTraversal",
                                 "LatentPCA", "LossCurves"]
    assert "LatentSpace2D" in names(tiny_vae(latent_dim=2))


@pytest.mark.parametrize("condition", ["label", "quarter"])
def test_conditional_models_get_every_default_figure(condition):
    from genlab.models.presets import CVAE  # conditions are read from the validation batch (labels or images)
    model = CVAE(image_shape=SHAPE, latent_dim=2, hidden=(16,), condition=condition, num_classes=3)
    for callback in default_callbacks(model)[:-1]:
        assert callback.draw(model, TinyImages()).get_size_inches().min() > 1


def test_render_from_checkpoint_writes_each_figure(run, tmp_path):
    ckpt = next((run[0] / "checkpoints").glob("*.ckpt"))
    for figure in ("samples", "traversal"):
        path = render_from_checkpoint(ckpt, TinyImages(), figure, tmp_path, "genlab.models.ConvVAE")
        assert path == tmp_path / f"{figure}.png" and read_png(path).std() > 0.05
    with pytest.raises(ValueError, match="latent_pca"):
        render_from_checkpoint(ckpt, TinyImages(), "nope", tmp_path, ConvVAE)
    assert set(FIGURES) == {"samples", "reconstructions", "interpolation", "traversal", "latent_pca", "latent_2d",
                            "conditional", "codebook", "sample_pca"}


class CountingImages(TinyImages):
    """TinyImages that count the `val_batch` calls the figures make."""

    def __init__(self) -> None:
        super().__init__(size=24)
        self.reads: list[int] = []

    def val_batch(self, n: int) -> tuple[Tensor, Tensor]:
        self.reads.append(n)
        return super().val_batch(n)


def figures_of(root: Path, share: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, bytes], list, list]:
    """Every PNG of a two-epoch fit of a 2-D ConvVAE with the default figures (sizes for TinyImages), the val_batch
    calls and the sizes encoded; `share=False`: each callback reads its own batch, as before `SharedImages`."""
    import genlab.figures.base as base
    if not share:
        monkeypatch.setattr(base, "shared_images", base.data_source)
    torch.manual_seed(0)
    model, data, encodes = tiny_vae(latent_dim=2), CountingImages(), []
    encode = model.encode
    model.encode = lambda x, y=None: encodes.append(len(x)) or encode(x, y)
    callbacks = [Reconstructions(num_images=4), LatentInterpolation(num_pairs=2, steps=5),
                 LatentTraversal(num_dims=2, steps=5, num_images=16), LatentPCA(num_points=20),
                 LatentSpace2D(num_points=20, grid=4)]
    Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0, accelerator="cpu", logger=False,
            default_root_dir=root, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
            callbacks=callbacks).fit(model, datamodule=data)
    pngs = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}
    return pngs, data.reads, encodes


def test_figures_draw_from_one_shared_batch_and_stay_the_same(tmp_path, monkeypatch):
    shared, reads, encodes = figures_of(tmp_path / "shared", True, monkeypatch)
    assert reads == [20]  # one read of the largest batch any figure asks for, for the whole run
    assert encodes.count(20) == 2  # LatentPCA and LatentSpace2D share one encoding an epoch
    with monkeypatch.context() as patch:
        alone, reads, encodes = figures_of(tmp_path / "alone", False, patch)
    assert len(reads) == 10 and encodes.count(20) == 4  # before: each callback read (and encoded) on its own
    assert len(shared) == 10 and shared.keys() == alone.keys()
    assert all(shared[key] == alone[key] for key in shared)  # the same pixels
