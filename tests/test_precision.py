"""Mixed precision and compilation, and the contract of the models without a test file of their own (PPCA,
Classifier). Every model's bf16 check is its contract class's (genlab.testing: `loss` under bf16 autocast and a
`precision="bf16-mixed"` fit log only finite values); kept here: a Gaussian ConvVAE with batch norm under bf16, the
CodePrior under bf16 and a `torch.compile`d ConvVAE that trains."""

import math
import shutil

import pytest
import torch

from genlab.run_control import Compile
from genlab.datamodules import FakeImages
from genlab.models import PPCA, VQVAE, Classifier, CodePrior, ConvVAE
from genlab.models.protocols import ExactLikelihood, FeatureExtractor, LatentModel, Sampler
from genlab.testing import LoggedValues, ModelContract, logged_fit, quiet_trainer

SHAPE = (1, 8, 8)
VQ = dict(image_shape=SHAPE, num_hiddens=8, num_residual_hiddens=4, num_residual_layers=1, num_embeddings=8,
          embedding_dim=4)


class TestPPCA(ModelContract):
    protocols, terms = (LatentModel, Sampler, ExactLikelihood), {"nll"}
    logs_training = False  # a training step only accumulates statistics: the fit is solved in closed form
    hparams = {"image_shape", "latent_dim", "min_noise_var"}

    def make_model(self):
        return PPCA(SHAPE, latent_dim=3)


class TestClassifier(ModelContract):
    protocols, terms = (FeatureExtractor,), {"accuracy"}

    def make_model(self):
        return Classifier(SHAPE, num_classes=10, widths=(4,), feature_dim=8)


def bf16_fit(model, tmp_path) -> dict[str, float]:
    return logged_fit(model, tmp_path, FakeImages(SHAPE, size=40, batch_size=8))


def test_bf16_mixed_fit_of_a_gaussian_conv_vae_with_batch_norm_gives_finite_losses(tmp_path):
    model = ConvVAE(SHAPE, latent_dim=3, widths=(4, 8), batch_norm=True, likelihood="gaussian")
    values = bf16_fit(model, tmp_path)
    assert any(key.startswith("train/") for key in values) and "val/loss" in values, values
    assert all(math.isfinite(value) for value in values.values()), values


def test_bf16_mixed_code_prior(tmp_path):
    trainer = quiet_trainer(tmp_path, max_steps=2)
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
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=0,
                            callbacks=[compile_callback, logged])
    trainer.fit(model, datamodule=FakeImages(SHAPE, size=40, batch_size=8))
    assert compile_callback.compiled == ["encoder", "decoder"]
    assert model.encoder._compiled_call_impl is not None and sorted(model.state_dict()) == names  # same keys
    assert model.encoder.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert "train/loss" in logged.values and all(math.isfinite(v) for v in logged.values.values()), logged.values
