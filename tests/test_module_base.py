"""One base for every family: `loss(x, y)` with "loss", the steps and one logging policy (`<stage>/loss` always,
training terms only on Lightning's logging steps), and the model's `last_terms` that the guard and curves read."""

import math

import pytest
import torch
import torch.nn.functional as F
from lightning import Callback, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from genlab.figures import LossCurves
from genlab.run_control import NonFiniteError, NonFiniteGuard
from genlab.models import AE, PPCA, VAE, VAEGAN, Classifier, HierarchicalVAE, RealNVP
from genlab.models.gan import DCGAN, GAN
from genlab.models.module import GenerativeModule
from genlab.models.module import StageSteps

SHAPE = (1, 8, 8)
FAMILIES = {
    "ae": lambda: AE(SHAPE, latent_dim=3, hidden=(16,)),
    "vae": lambda: VAE(SHAPE, latent_dim=3, hidden=(16,)),
    "ppca": lambda: PPCA(SHAPE, latent_dim=3),
    "classifier": lambda: Classifier(SHAPE, num_classes=3, widths=(4,), feature_dim=8),
    "gan": lambda: GAN(SHAPE, latent_dim=4, hidden=(16,)),
    "gan_wgan": lambda: GAN(SHAPE, latent_dim=4, hidden=(16,), objective="wgan-gp"),
    "dcgan": lambda: DCGAN((1, 16, 16), latent_dim=4, width=4),
}


def batch(model, n: int = 6) -> tuple[Tensor, Tensor]:
    x = torch.rand(n, *model.image_shape, generator=torch.Generator().manual_seed(0)).round()
    return x, torch.arange(n) % 3


def loader(model, n: int = 24, batch_size: int = 6) -> DataLoader:
    return DataLoader(TensorDataset(*batch(model, n)), batch_size=batch_size)


def quiet_trainer(**kwargs) -> Trainer:
    return Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, num_sanity_val_steps=0, **kwargs)


def test_every_family_has_the_base_steps():
    assert issubclass(GenerativeModule, StageSteps)
    assert all(isinstance(make(), StageSteps) for make in FAMILIES.values())
    assert all(isinstance(FAMILIES[name](), GenerativeModule) for name in ("ppca", "classifier", "gan", "dcgan"))


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_has_a_loss_of_finite_scalar_terms(name):
    model = FAMILIES[name]()
    x, y = batch(model)
    terms = model.loss(x, y)
    assert "loss" in terms and all(v.shape == () and torch.isfinite(v) for v in terms.values()), terms


ADAM_MODELS = {**{name: make for name, make in FAMILIES.items() if name != "ppca"},
               "realnvp": lambda: RealNVP((1, 4, 4), num_scales=1, hidden=4, num_blocks=1),
               "vaegan": lambda: VAEGAN(), "hvae": lambda: HierarchicalVAE(resolutions=(1,), width=8)}


@pytest.mark.parametrize("name", ADAM_MODELS)
def test_adam_on_a_cpu_is_the_fused_kernel(name):
    optimizers = ADAM_MODELS[name]().configure_optimizers()
    for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
        assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["fused"], optimizer.defaults


def test_each_family_loss_is_its_objective():
    ppca = FAMILIES["ppca"]()
    x, y = batch(ppca)
    ppca.fit([(x, y)])
    torch.testing.assert_close(ppca.loss(x)["loss"], -ppca.log_likelihood(x).mean().float())
    classifier = FAMILIES["classifier"]()
    torch.testing.assert_close(classifier.loss(x, y)["loss"], F.cross_entropy(classifier(x), y))
    with pytest.raises(ValueError, match="labels"):
        classifier.loss(x)
    for gan in (FAMILIES["gan"](), FAMILIES["gan_wgan"]()):
        terms = gan.loss(x)
        assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(terms)
        torch.testing.assert_close(terms["loss"], terms["d_loss"] + terms["g_loss"])
    assert "gp" in FAMILIES["gan_wgan"]().loss(x) and "gp" not in FAMILIES["gan"]().loss(x)
    with torch.no_grad():  # the gradient penalty needs gradients: left out, the rest still computed
        assert "gp" not in FAMILIES["gan_wgan"]().loss(x)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_base_logs_val_loss_for_every_family(name):
    model = FAMILIES[name]()
    logged = quiet_trainer().validate(model, loader(model), verbose=False)[0]
    assert math.isfinite(logged["val/loss"])


def test_terms_without_loss_are_refused():
    model = FAMILIES["ae"]()
    with pytest.raises(ValueError, match=r"terms \['recon'\] have no 'loss'"):
        model.log_terms("val", {"recon": torch.tensor(1.0)}, 4)


class LogRecorder:
    """Wraps `model.log` (which `log_dict` calls too): (batch index, name) of every training-stage call."""

    def __init__(self, model) -> None:
        self.calls, self.log = [], model.log
        model.log = self

    def __call__(self, name, value, **kwargs):
        if name.startswith("train/"):
            self.calls.append((self.trainer.fit_loop.epoch_loop.batch_idx, name))
        return self.log(name, value, **kwargs)


class HeldOutRecorder(LogRecorder):
    """Every held-out (`val/`, `test/`) `self.log` call, by name."""

    def __call__(self, name, value, **kwargs):
        if not name.startswith("train/"):
            self.calls.append(name)
        return self.log(name, value, **kwargs)


class SeenAtEpochEnd(Callback):
    """What a user's callback reads from `callback_metrics` in `on_validation_epoch_end`."""

    def on_validation_epoch_end(self, trainer, pl_module):
        self.seen = dict(trainer.callback_metrics)


@pytest.mark.parametrize("stage", ["val", "test"])
@pytest.mark.parametrize("name", ["ae", "ppca", "gan"])  # deterministic held-out losses
def test_held_out_terms_are_logged_once_an_epoch_as_batch_weighted_means(name, stage):
    model = FAMILIES[name]()
    recorder, seen = HeldOutRecorder(model), SeenAtEpochEnd()
    x, y = batch(model, 24)
    data = DataLoader(TensorDataset(x, y), batch_size=7)  # 7, 7, 7, 3: a mean of batch means would differ
    trainer = quiet_trainer(callbacks=[seen])
    run = trainer.validate if stage == "val" else trainer.test
    logged = run(model, data, verbose=False)[0]
    assert sorted(recorder.calls) == sorted(set(recorder.calls)), recorder.calls  # one call per term per epoch
    assert f"{stage}/loss" in recorder.calls
    with torch.no_grad():
        # The expected means from the same per-batch values the steps saw (GAN: same fixed held-out noise).
        model.on_validation_epoch_start()
        expected = {}
        for start in range(0, 24, 7):
            terms = {f"{stage}/{k}": v for k, v in model.loss(x[start:start + 7], y[start:start + 7]).items()}
            for key, value in terms.items():
                expected[key] = expected.get(key, 0.0) + float(value) * len(x[start:start + 7]) / 24
    if name != "gan":  # a GAN's held-out loss is a different estimate from its training loss
        assert logged[f"{stage}/loss"] == pytest.approx(expected[f"{stage}/loss"], rel=1e-5)
    if stage == "val":
        assert seen.seen[f"{stage}/loss"] == pytest.approx(logged[f"{stage}/loss"])

@pytest.mark.parametrize("name", ["vae", "classifier", "gan"])
def test_training_terms_are_logged_only_on_logging_steps_and_the_curves_keep_every_step(name, tmp_path):
    model, curves = FAMILIES[name](), LossCurves()
    recorder = LogRecorder(model)
    trainer = quiet_trainer(default_root_dir=tmp_path, max_steps=7 * (2 if name == "gan" else 1), log_every_n_steps=3,
                            limit_val_batches=0, callbacks=[curves])
    recorder.trainer = trainer
    trainer.fit(model, loader(model, n=60))  # 10 batches: the 7th is not an epoch's last
    batches = sorted({index for index, term in recorder.calls if term == "train/loss"})
    assert batches == [2, 5, 6]  # (batch + 1) % 3 == 0, and the run's last batch
    assert len(curves.history["loss"]["train"]) == 7
    terms = set(model.last_terms)
    assert "loss" in terms and {f"train/{t}" for t in terms} <= set(trainer.callback_metrics)
    assert "train/loss" in trainer.progress_bar_metrics


def test_gan_training_loss_is_the_sum_of_the_players_terms():
    model = FAMILIES["gan"]()
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, loader(model, n=12))
    terms = model.last_terms
    torch.testing.assert_close(terms["loss"], terms["d_loss"] + terms["g_loss"])
    assert not any(v.requires_grad for v in terms.values())


class NaNAtStep(GenerativeModule):
    """A linear autoencoder whose `kl` term turns NaN at `bad_step`."""

    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.net, self.bad_step, self.image_shape = nn.Linear(64, 64), bad_step, SHAPE

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        recon = (self.net(x.flatten(1)) - x.flatten(1)).pow(2).sum(1).mean()
        kl = torch.tensor(float("nan") if self.global_step == self.bad_step else 0.0)
        return {"loss": recon + kl, "recon": recon, "kl": kl}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def test_guard_names_a_nan_term_between_logging_steps():
    model = NaNAtStep(bad_step=4)  # log_every_n_steps=3: batch 4 is not a logging step
    trainer = quiet_trainer(max_steps=10, log_every_n_steps=3, limit_val_batches=0, callbacks=[NonFiniteGuard()])
    with pytest.raises(NonFiniteError, match=r"train/kl = nan.* at epoch 0, global step 4"):
        trainer.fit(model, loader(model, n=60))


def test_guard_names_a_nan_discriminator_term_of_a_gan():
    model = FAMILIES["gan"]()
    nn.init.constant_(model.discriminator[-1].bias, float("nan"))
    trainer = quiet_trainer(max_steps=4, log_every_n_steps=50, limit_val_batches=0, callbacks=[NonFiniteGuard()])
    with pytest.raises(NonFiniteError, match=r"train/d_loss = nan.* global step 0"):
        trainer.fit(model, loader(model))
