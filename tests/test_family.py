"""DenoisingAE, CVAE, BaselineNN, FlowVAE and KL control: the model contract (genlab.testing) once per preset, then
KL schedules and free bits, and the CLI building them. Model-specific behaviour (conditions, denoising, PPCA, real
MNIST) is in test_family_variants.py."""

import math

import pytest
import torch
from lightning import Trainer
from torch.utils.data import DataLoader, TensorDataset

from genlab.models import AE, VAE
from genlab.models.losses import free_bits_kl, kl_annealing
from genlab.models.presets import CVAE, BaselineNN, DenoisingAE, FlowVAE
from genlab.testing import AutoencoderContract, quiet_trainer

SHAPE = (1, 16, 12)
TINY = dict(image_shape=SHAPE, latent_dim=4, hidden=(32,))
VAE_SETTINGS = {"image_shape", "latent_dim", "hidden", "beta", "free_bits", "kl_warmup_steps", "kl_cycles",
                "kl_cycle_ratio", "tc_weight", "prior", "prior_layers", "likelihood", "sigma", "mixture_components",
                "lr"}


# --- the contract, once per preset ---
class TestDenoisingAE(AutoencoderContract):
    terms, stochastic = {"recon"}, False
    loss_floor = 0.5 * math.prod(SHAPE) * math.log(2 * math.pi)  # Gaussian constant: unlearnable
    hparams = {"image_shape", "widths", "noise_std", "likelihood", "sigma", "mixture_components", "lr"}

    def make_model(self):
        return DenoisingAE(image_shape=SHAPE, widths=(8, 16))


class TestCVAELabel(AutoencoderContract):
    terms = {"recon", "kl"}

    def make_model(self):
        return CVAE(**TINY, num_classes=10)


class TestCVAEQuarter(AutoencoderContract):
    terms, hparams = {"recon", "kl"}, VAE_SETTINGS | {"condition", "num_classes"}

    def make_model(self):
        return CVAE(**TINY, condition="quarter")


class TestCVAENone(AutoencoderContract):
    terms = {"recon", "kl"}

    def make_model(self):
        return CVAE(**TINY, condition="none")


class TestBaselineNN(AutoencoderContract):
    terms, stochastic = {"recon"}, False
    temperature_spreads = False  # no latent code: every sample is the decoding of the condition alone

    def make_model(self):
        return BaselineNN(image_shape=SHAPE, hidden=(32,))


class TestFlowVAEPlanar(AutoencoderContract):
    terms = {"recon", "kl", "log_det"}

    def make_model(self):
        return FlowVAE(**TINY)


class TestFlowVAEIAF(AutoencoderContract):
    terms, hparams = {"recon", "kl", "log_det"}, VAE_SETTINGS | {"flow", "num_flows", "iaf_update"}

    def make_model(self):
        return FlowVAE(**TINY, flow="iaf", num_flows=2)


class TestVAEFreeBits(AutoencoderContract):
    terms, term_weights = {"recon", "kl", "kl_free_bits"}, {"kl_free_bits": 0.0}  # warm-up starts at 0

    def make_model(self):
        return VAE(**TINY, free_bits=0.5, kl_warmup_steps=100, kl_cycles=2, kl_cycle_ratio=0.5)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, *SHAPE)


def fit(model, data: torch.Tensor, labels: torch.Tensor, steps: int, tmp_path, **kwargs) -> Trainer:
    trainer = quiet_trainer(tmp_path, max_steps=steps, **kwargs)
    trainer.fit(model, DataLoader(TensorDataset(data, labels), batch_size=16))
    return trainer


# --- KL control ---
@pytest.mark.parametrize("step, total, cycles, ratio, expected", [
    (0, 0, 1, 1.0, 1.0), (10**6, 0, 1, 1.0, 1.0),  # off
    (0, 100, 1, 1.0, 0.0), (25, 100, 1, 1.0, 0.25), (99, 100, 1, 1.0, 0.99), (100, 100, 1, 1.0, 1.0),  # warm-up
    (0, 100, 4, 0.5, 0.0), (5, 100, 4, 0.5, 0.4), (12, 100, 4, 0.5, 0.96), (13, 100, 4, 0.5, 1.0),  # Fu et al.
    (24, 100, 4, 0.5, 1.0), (25, 100, 4, 0.5, 0.0), (30, 100, 4, 0.5, 0.4), (99, 100, 4, 0.5, 1.0),
    (400, 100, 4, 0.5, 1.0),
])
def test_kl_annealing_matches_the_formula(step, total, cycles, ratio, expected):
    assert kl_annealing(step, total, cycles, ratio) == pytest.approx(expected)


def test_free_bits_never_lets_a_dimension_under_the_floor():
    kl = torch.rand(32, 6) * torch.tensor([0.01, 0.1, 0.4, 0.6, 2.0, 5.0])
    per_dim = kl.mean(0)
    assert torch.allclose(free_bits_kl(kl, 0.5), per_dim.clamp(min=0.5).sum())
    assert free_bits_kl(kl, 0.5) >= 6 * 0.5


def test_free_bits_objective_floors_dims_and_reports_the_true_kl(images):
    model = VAE(**TINY, free_bits=0.5)
    h = model.encoder(images).detach().requires_grad_()
    _, terms = model.bottleneck(h)
    per_dim = model.bottleneck.kl_per_dim(h)
    assert torch.allclose(terms["kl"], per_dim.sum()) and model.term_weights() == {"kl_free_bits": 1.0}
    assert torch.allclose(terms["kl_free_bits"], per_dim.clamp(min=0.5).sum())
    terms["kl_free_bits"].backward()
    mean_grad = h.grad[:, :4].abs().sum(0)
    assert torch.equal(mean_grad == 0, per_dim < 0.5)  # dims under the floor get no gradient from the KL


def test_kl_weight_is_logged_and_resumes_with_global_step(tmp_path):
    data, y = torch.rand(64, *SHAPE), torch.zeros(64, dtype=torch.long)
    model = VAE(**TINY, beta=2.0, kl_warmup_steps=10)
    trainer = fit(model, data, y, steps=3, tmp_path=tmp_path)
    assert trainer.callback_metrics["train/kl_weight"].item() == pytest.approx(2.0 * 2 / 10)  # logged at step 2
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    resumed = VAE(**TINY, beta=2.0, kl_warmup_steps=10)
    trainer = quiet_trainer(tmp_path, max_steps=6)
    trainer.fit(resumed, DataLoader(TensorDataset(data, y), batch_size=16), ckpt_path=tmp_path / "half.ckpt")
    assert trainer.callback_metrics["train/kl_weight"].item() == pytest.approx(2.0 * 5 / 10)
    assert resumed.eval().term_weights() == {"kl": 2.0}  # evaluation uses the schedule's end value


def test_kl_per_dim_orders_dimensions_and_is_missing_without_kl(images):
    model = VAE(**TINY)
    assert model.kl_per_dim(images).shape == (4,) and (model.kl_per_dim(images) >= 0).all()
    assert TestFlowVAEPlanar().make_model().kl_per_dim(images).shape == (4,)
    with pytest.raises(TypeError, match="no KL"):
        AE(image_shape=SHAPE, latent_dim=4, hidden=(32,)).kl_per_dim(images)


# --- the CLI builds them ---
@pytest.mark.parametrize("model, expected", [
    (["--model=genlab.models.ppca.PPCA", "--model.latent_dim=3"], {"latent_dim": 3}),
    (["--model=genlab.models.presets.CVAE", "--model.hidden=[16]", "--model.latent_dim=2"], {"num_classes": 10}),
])
def test_cli_fit_links_shape_and_classes_and_writes_a_checkpoint(model, expected, tmp_path):
    from genlab.cli import main  # full import paths: the short names need genlab.models.__all__

    cli = main(["fit", *model, "--data=FakeImages", "--data.image_shape=[1, 16, 12]", "--data.size=32",
                "--data.batch_size=8", "--trainer.max_epochs=2", "--trainer.accelerator=cpu", "--figures=false",
                "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                f"--trainer.default_root_dir={tmp_path}"])
    assert cli.model.image_shape == SHAPE and all(cli.model.hparams[k] == v for k, v in expected.items())
    assert any(p.name == "last.ckpt" for p in tmp_path.rglob("*.ckpt"))
