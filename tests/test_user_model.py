"""Models written outside genlab: a package `mypkg` (written to a temporary folder put on sys.path) holding a VAE
built from genlab's parts and an autoencoder on Lightning alone passes `genlab.testing` and trains from
`genlab fit --model mypkg.<Class>`; the suite fails models that break the contract."""

import importlib
import sys
from textwrap import dedent

import pytest
import torch

from genlab.models.protocols import LatentModel, Sampler
from genlab.testing import AutoencoderContract, ModelContract

MYPKG = '''
"""A user's models: nothing here is part of genlab."""

import math
from collections.abc import Sequence

import torch
from lightning import LightningModule
from torch import Tensor, nn
from torch.nn import functional as F

from genlab.models import Autoencoder
from genlab.models.blocks import MLPDecoder, MLPEncoder
from genlab.models.bottlenecks import GaussianBottleneck


class TinyVAE(Autoencoder):
    """A VAE from genlab's parts: MLP encoder and decoder around a Gaussian bottleneck."""

    def __init__(self, image_shape: Sequence[int] = (1, 16, 16), latent_dim: int = 4, hidden: int = 32,
                 lr: float = 1e-3) -> None:
        bottleneck = GaussianBottleneck(latent_dim)
        super().__init__(MLPEncoder(image_shape, bottleneck.in_features, (hidden,)), bottleneck,
                         MLPDecoder(latent_dim, image_shape, (hidden,)), image_shape, lr=lr)


class PlainAE(LightningModule):
    """A linear autoencoder on Lightning alone, with the members the contract names."""

    def __init__(self, image_shape: Sequence[int] = (1, 16, 16), latent_dim: int = 4, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.image_shape, self.latent_dim, self.lr = tuple(image_shape), latent_dim, lr
        size = math.prod(self.image_shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(size, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, size), nn.Unflatten(1, self.image_shape))

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return torch.sigmoid(self.decoder(z))

    def reconstruct(self, x: Tensor, y: Tensor | None = None, stochastic: bool = False,
                    generator: torch.Generator | None = None) -> Tensor:
        return self.decode(self.encode(x))

    def sample(self, num_samples: int, y: Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        z = temperature * torch.randn(num_samples, self.latent_dim, generator=generator)  # drawn on the CPU
        return self.decode(z.to(self.device))

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        logits = self.decoder(self.encode(x))
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()
        return {"loss": recon, "recon": recon}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        terms = self.loss(*batch)
        self.log_dict({f"train/{name}": value for name, value in terms.items()})
        return terms["loss"]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.log_dict({f"val/{name}": value for name, value in self.loss(*batch).items()})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)
'''


@pytest.fixture(scope="module", autouse=True)
def mypkg(tmp_path_factory):
    """`mypkg` (models in mypkg/models.py, exported by its __init__) importable for this module's tests."""
    root = tmp_path_factory.mktemp("user_code")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "models.py").write_text(dedent(MYPKG))
    (root / "mypkg" / "__init__.py").write_text("from .models import PlainAE, TinyVAE\n")
    sys.path.insert(0, str(root))
    yield importlib.import_module("mypkg")
    sys.path.remove(str(root))
    for name in ("mypkg", "mypkg.models"):
        sys.modules.pop(name, None)


# --- the suite, as a user writes it ---
class TestTinyVAE(AutoencoderContract):
    terms = {"recon", "kl"}

    def make_model(self):
        return importlib.import_module("mypkg").TinyVAE()


class TestPlainAE(ModelContract):
    protocols, terms = (LatentModel, Sampler), {"recon"}
    stochastic, temperature_spreads = False, True

    def make_model(self):
        return importlib.import_module("mypkg").PlainAE()


# --- `genlab fit --model mypkg.<Class>` with the default figures ---
@pytest.mark.parametrize("name", ["TinyVAE", "PlainAE"])
def test_genlab_fit_trains_a_model_named_by_import_path(name, tmp_path):
    from genlab.cli import main

    cli = main(["fit", f"--model=mypkg.{name}", "--data=Shapes", "--data.image_size=16", "--data.size=32",
                "--data.batch_size=8", "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu",
                "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                f"--trainer.default_root_dir={tmp_path}"])
    assert type(cli.model).__name__ == name and cli.model.image_shape == (1, 16, 16)  # linked from Shapes
    assert cli.trainer.global_step == 1 and torch.isfinite(cli.trainer.callback_metrics["val/loss"])


# --- the suite fails models that break the contract ---
class BrokenPlainAE(ModelContract):
    """Not collected (no "Test" prefix): `break_model` spoils one member of a PlainAE."""

    protocols = (LatentModel, Sampler)

    def make_model(self):
        model = importlib.import_module("mypkg").PlainAE()
        self.break_model(model)
        return model

    def break_model(self, model) -> None:
        raise NotImplementedError


def test_the_suite_fails_a_decoder_outside_the_unit_interval():
    class Logits(BrokenPlainAE):
        def break_model(self, model):
            model.decode = lambda z, y=None: model.decoder(z)  # logits, not images in [0, 1]

    with pytest.raises(AssertionError, match=r"not \[0, 1\]"):
        Logits().test_protocol_shapes_and_range()


def test_the_suite_fails_a_loss_that_misses_a_parameter_or_has_no_loss_key():
    class Unused(BrokenPlainAE):
        def break_model(self, model):
            model.unused = torch.nn.Linear(2, 2)

    class NoLoss(BrokenPlainAE):
        def break_model(self, model):
            model.loss = lambda x, y=None: {"recon": x.sum()}

    with pytest.raises(AssertionError, match=r"does not reach \['unused.weight', 'unused.bias'\]"):
        Unused().test_loss_terms_are_named_finite_scalars_and_reach_the_parameters()
    with pytest.raises(AssertionError, match="must return a dict with 'loss'"):
        NoLoss().test_loss_terms_are_named_finite_scalars_and_reach_the_parameters()


def test_a_missing_make_model_says_what_to_define():
    with pytest.raises(NotImplementedError, match="ModelContract must define make_model"):
        ModelContract().make_model()
