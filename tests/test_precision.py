"""Mixed precision and compilation: every model fits a few steps with `precision="bf16-mixed"` on CPU with finite
losses, and a `torch.compile`d ConvVAE trains."""

import math
import shutil

import pytest
import torch
from lightning import Callback, Trainer

from genlab.callbacks.compile import Compile
from genlab.datamodules import FakeImages
from genlab.models import (AE, CVAE, DCGAN, GAN, PPCA, VAE, VQVAE, BaselineNN, Classifier, CodePrior, ConvAE,
                           ConvVAE, DenoisingAE, FlowVAE, RealNVP)

SHAPE = (1, 8, 8)
MLP = dict(image_shape=SHAPE, latent_dim=3, hidden=(16,))
VQ = dict(image_shape=SHAPE, num_hiddens=8, num_residual_hiddens=4, num_residual_layers=1, num_embeddings=8,
          embedding_dim=4)
MODELS = {
    "AE": lambda: AE(**MLP),
    "VAE": lambda: VAE(**MLP),
    "ConvAE": lambda: ConvAE(SHAPE, latent_dim=3, widths=(4, 8)),
    "ConvVAE": lambda: ConvVAE(SHAPE, latent_dim=3, widths=(4, 8)),
    "ConvVAE-gaussian": lambda: ConvVAE(SHAPE, latent_dim=3, widths=(4, 8), batch_norm=True, likelihood="gaussian"),
    "DenoisingAE": lambda: DenoisingAE(SHAPE, widths=(4, 4, 4)),
    "CVAE": lambda: CVAE(**MLP, num_classes=10),
    "CVAE-quarter": lambda: CVAE(**MLP, condition="quarter"),
    "BaselineNN": lambda: BaselineNN(SHAPE, hidden=(16,)),
    "RealNVP": lambda: RealNVP(SHAPE, hidden=4, num_blocks=1),
    "FlowVAE-planar": lambda: FlowVAE(**MLP, num_flows=2),
    "FlowVAE-iaf": lambda: FlowVAE(**MLP, flow="iaf", num_flows=2),
    "VQVAE": lambda: VQVAE(**VQ),
    "VQVAE-ema": lambda: VQVAE(**VQ, ema=True, kmeans_init=True, dead_code_steps=1),
    "GAN": lambda: GAN(SHAPE, latent_dim=3, hidden=(16,)),
    "DCGAN": lambda: DCGAN(SHAPE, latent_dim=3, width=4),
    "DCGAN-wgan-gp": lambda: DCGAN(SHAPE, latent_dim=3, width=4, objective="wgan-gp"),
    "PPCA": lambda: PPCA(SHAPE, latent_dim=3),
    "Classifier": lambda: Classifier(SHAPE, num_classes=10, widths=(4,), feature_dim=8),
}


class LoggedValues(Callback):
    """Every scalar logged on the progress bar and in callback metrics, after each training and validation batch."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def _collect(self, trainer: Trainer) -> None:
        self.values.update({key: float(value) for key, value in trainer.callback_metrics.items()})

    def on_train_batch_end(self, trainer, *args) -> None:
        self._collect(trainer)

    def on_validation_epoch_end(self, trainer, *args) -> None:
        self._collect(trainer)


def bf16_fit(model, tmp_path, batches: int = 3) -> dict[str, float]:
    logged = LoggedValues()
    trainer = Trainer(accelerator="cpu", precision="bf16-mixed", max_epochs=1, limit_train_batches=batches,
                      limit_val_batches=1, num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                      callbacks=[logged])
    trainer.fit(model, datamodule=FakeImages(SHAPE, size=40, batch_size=8))
    return logged.values


@pytest.mark.parametrize("name", MODELS)
def test_bf16_mixed_fit_gives_finite_losses(name, tmp_path):
    values = bf16_fit(MODELS[name](), tmp_path)
    assert any(key.startswith("train/") for key in values) or name == "PPCA", values
    assert any(key.startswith("val/") for key in values), values
    assert all(math.isfinite(value) for value in values.values()), values


def test_bf16_mixed_code_prior(tmp_path):
    trainer = Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(VQVAE(**VQ), datamodule=FakeImages(SHAPE, size=40, batch_size=8))
    trainer.save_checkpoint(tmp_path / "vqvae.ckpt")
    values = bf16_fit(CodePrior(str(tmp_path / "vqvae.ckpt"), hidden=8, num_layers=2), tmp_path)
    assert "train/nll" in values and all(math.isfinite(value) for value in values.values()), values
    assert torch.get_autocast_dtype("cpu") == torch.bfloat16  # the default the run used


def inductor_available() -> bool:
    try:
        import torch._inductor  # noqa: F401
    except ImportError:
        return False
    return shutil.which("g++") is not None or shutil.which("c++") is not None


@pytest.mark.slow
@pytest.mark.skipif(not inductor_available(), reason="torch.compile's inductor needs a C++ compiler")
def test_compiled_conv_vae_fits_with_finite_losses(tmp_path):
    model = ConvVAE(SHAPE, latent_dim=3, widths=(4, 8))
    names = sorted(model.state_dict())
    compile_callback = Compile(channels_last=True)
    logged = LoggedValues()
    trainer = Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=3, limit_val_batches=0, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      default_root_dir=tmp_path, callbacks=[compile_callback, logged])
    trainer.fit(model, datamodule=FakeImages(SHAPE, size=40, batch_size=8))
    assert compile_callback.compiled == ["encoder", "decoder"]
    assert model.encoder._compiled_call_impl is not None and sorted(model.state_dict()) == names  # same keys
    assert model.encoder.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert "train/loss" in logged.values and all(math.isfinite(v) for v in logged.values.values()), logged.values
