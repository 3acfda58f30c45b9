"""GAN, DCGAN and WGAN-GP: the model contract, losses by hand, what one manual step touches, and short fits (real
MNIST when slow)."""

import math
import time

import pytest
import torch
from lightning import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from genlab.models.gan import DCGAN, GAN, DCDiscriminator, DCGenerator
from genlab.models.gan_losses import bce_discriminator_loss, bce_generator_loss, gradient_penalty, js_estimate
from genlab.models.protocols import Sampler
from genlab.testing import ModelContract

MODELS = {
    "gan": lambda: GAN(image_shape=(1, 8, 8), latent_dim=4, hidden=(16, 32)),
    "gan_wgan": lambda: GAN(image_shape=(1, 8, 8), latent_dim=4, hidden=(16, 32), objective="wgan-gp"),
    "dcgan": lambda: DCGAN(image_shape=(1, 16, 16), latent_dim=4, width=4),
    "dcgan_wgan": lambda: DCGAN(image_shape=(1, 16, 16), latent_dim=4, width=4, objective="wgan-gp"),
}


def quiet_trainer(**kwargs) -> Trainer:
    kwargs.setdefault("enable_checkpointing", False)
    return Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, **kwargs)


def loader(model, n: int = 16, batch_size: int = 8) -> DataLoader:
    x = torch.rand(n, *model.image_shape)
    return DataLoader(TensorDataset(x, torch.zeros(n)), batch_size=batch_size)


# --- losses ---
def test_bce_losses_at_an_undecided_discriminator():
    zeros = torch.zeros(5)  # D(x) = 1/2 everywhere
    assert torch.allclose(bce_discriminator_loss(zeros, zeros), torch.tensor(2 * math.log(2)))
    assert torch.allclose(bce_generator_loss(zeros), torch.tensor(math.log(2)))
    assert torch.allclose(js_estimate(zeros, zeros), torch.tensor(0.0), atol=1e-6)  # JSD of identical laws
    big = torch.full((5,), 20.0)
    assert torch.allclose(js_estimate(big, -big), torch.tensor(math.log(4)), atol=1e-6)  # disjoint: 2 log 2
    # one-sided smoothing: real target 0.9, fake target stays 0
    smoothed = bce_discriminator_loss(zeros, zeros, real_label=0.9)
    assert torch.allclose(smoothed, torch.tensor(2 * math.log(2)))  # the sigmoid(0) = 1/2 case is target-free
    logits = torch.tensor([2.0])
    expected = -(0.9 * torch.log(torch.sigmoid(logits)) + 0.1 * torch.log(1 - torch.sigmoid(logits)))
    assert torch.allclose(bce_discriminator_loss(logits, torch.full((1,), -50.0), 0.9), expected, atol=1e-6)


def test_gradient_penalty_of_a_linear_critic():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(12, 1, bias=False))
    real, fake = torch.rand(4, 3, 2, 2), torch.rand(4, 3, 2, 2)
    norm = critic[1].weight.norm()  # the gradient of w.x is w everywhere
    assert torch.allclose(gradient_penalty(critic, real, fake), (norm - 1) ** 2, atol=1e-6)


# --- the contract ---
class TestGAN(ModelContract):
    protocols, temperature_spreads = (Sampler,), True
    terms = {"d_loss", "g_loss", "d_real", "d_fake"}
    skip = {"fit": "the players' losses do not fall together (test_a_short_fit_moves_d_fake_towards_d_real checks "
                   "that G learns)"}

    def make_model(self):
        return MODELS["gan"]()


class TestDCGAN(TestGAN):
    hparams = {"image_shape", "latent_dim", "width", "attention_resolutions", "objective", "lr_g", "lr_d", "beta1",
               "beta2", "real_label", "gp_weight", "n_critic"}

    def make_model(self):
        return MODELS["dcgan"]()


class TestDCGANWassersteinGP(TestGAN):
    terms = TestGAN.terms | {"gp"}

    def make_model(self):
        return MODELS["dcgan_wgan"]()


# --- the networks ---
@pytest.mark.parametrize("name", MODELS)
def test_decode_maps_noise_to_images(name):
    model = MODELS[name]().eval()
    images = model.decode(torch.randn(2, model.latent_dim))
    assert images.shape == (2, *model.image_shape) and 0 <= images.min() and images.max() <= 1


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_dcgan_nets_fit_the_image_sizes(shape):
    assert DCGenerator(8, shape, width=4)(torch.randn(2, 8)).shape == (2, *shape)
    assert DCDiscriminator(shape, width=4)(torch.rand(2, *shape)).shape == (2, 1)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="objective='hinge'"):
        GAN(objective="hinge")
    with pytest.raises(ValueError, match="square"):
        DCGAN(image_shape=(1, 28, 20))


def test_n_critic_defaults_to_the_objectives_paper_value():
    assert MODELS["gan_wgan"]().n_critic == 5 and MODELS["gan"]().n_critic == 1


# --- one manual step ---
class RecordGrads(Callback):
    """After every manual_backward, snapshots both networks' gradients."""

    def setup(self, trainer, pl_module, stage) -> None:
        self.snapshots: list[dict[str, dict[str, torch.Tensor]]] = []
        original = pl_module.manual_backward

        def recording(loss, *args, **kwargs):
            original(loss, *args, **kwargs)
            self.snapshots.append({net: {n: (p.grad.clone() if p.grad is not None else None)
                                         for n, p in getattr(pl_module, net).named_parameters()}
                                   for net in ("generator", "discriminator")})

        pl_module.manual_backward = recording


@pytest.mark.parametrize("name", MODELS)
def test_one_step_updates_both_and_g_loss_never_reaches_d(name):
    model = MODELS[name]()
    before = {net: [p.detach().clone() for p in getattr(model, net).parameters()]
              for net in ("generator", "discriminator")}
    record = RecordGrads()
    quiet_trainer(max_epochs=1, limit_train_batches=1, callbacks=[record]).fit(model, loader(model))
    for net, params in before.items():
        assert any(not torch.equal(p0, p) for p0, p in zip(params, getattr(model, net).parameters())), net
    d_step, g_step = record.snapshots  # D's backward, then G's
    assert all(g is None or not g.any() for g in d_step["generator"].values())  # fakes were detached for D
    for n, grad in g_step["discriminator"].items():  # G's backward left D's gradients exactly as D's step did
        assert (grad is None and d_step["discriminator"][n] is None) or torch.equal(grad, d_step["discriminator"][n])
    assert any(g is not None and g.abs().sum() > 0 for g in g_step["generator"].values())


class Metrics(Callback):
    """Every batch's training terms (the model's `last_terms`: Lightning's metrics are logged every
    `log_every_n_steps` only) beside the latest logged metrics."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        terms = {f"train/{k}": v for k, v in pl_module.last_terms.items()}
        self.rows.append({k: v.item() for k, v in {**trainer.callback_metrics, **terms}.items()})


def test_bf16_mixed_fit_logs_finite_losses_and_val_loss_drives_checkpoints(tmp_path):
    model, metrics = MODELS["gan"](), Metrics()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss")
    trainer = quiet_trainer(max_epochs=2, precision="bf16-mixed", callbacks=[metrics, checkpoint],
                            enable_checkpointing=True)
    trainer.fit(model, loader(model), loader(model, n=8))
    keys = {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"}
    assert keys <= set(metrics.rows[-1]) and all(math.isfinite(v) for row in metrics.rows for v in row.values())
    assert "val/loss" in trainer.callback_metrics and checkpoint.best_model_path


def test_wgan_gp_bf16_fit_is_finite():
    model, metrics = MODELS["dcgan_wgan"](), Metrics()
    quiet_trainer(max_epochs=1, precision="bf16-mixed", callbacks=[metrics]).fit(model, loader(model))
    assert "train/gp" in metrics.rows[-1] and all(math.isfinite(v) for r in metrics.rows for v in r.values())


def lit_squares(n: int, side: int = 8) -> torch.Tensor:
    """Every image the same bright square on black: a distribution a tiny GAN can match in a few dozen steps."""
    x = torch.zeros(n, 1, side, side)
    x[:, :, 2:6, 2:6] = 1.0
    return x


def test_a_short_fit_moves_d_fake_towards_d_real():
    model, metrics = GAN(image_shape=(1, 8, 8), latent_dim=4, hidden=(32, 64), lr_g=2e-3, lr_d=2e-3), Metrics()
    data = DataLoader(TensorDataset(lit_squares(256), torch.zeros(256)), batch_size=16)
    quiet_trainer(max_epochs=4, callbacks=[metrics]).fit(model, data)  # 64 steps: D wins first, then G catches up
    gaps = [row["train/d_real"] - row["train/d_fake"] for row in metrics.rows]
    peak = max(gaps[:20])
    assert sum(gaps[-10:]) / 10 < 0.5 * peak, (peak, gaps[-10:])
    fakes = model.eval().sample(64, generator=torch.Generator().manual_seed(0))
    assert (fakes - lit_squares(1)).abs().mean() < 0.2


# --- real MNIST ---
@pytest.fixture(scope="module")
def mnist(mnist_root):
    from genlab.datamodules import MNIST

    data = MNIST(root=mnist_root, batch_size=64)
    data.setup("fit")
    return data


@pytest.mark.slow
def test_gan_on_mnist_closes_the_gap(mnist):
    model, metrics = GAN(), Metrics()
    start = time.perf_counter()
    quiet_trainer(max_steps=2 * 300, callbacks=[metrics]).fit(model, mnist.train_dataloader())  # 2 opt steps/batch
    gaps = [row["train/d_real"] - row["train/d_fake"] for row in metrics.rows]
    early, late = max(gaps[:50]), sum(gaps[-50:]) / 50
    d_fake = sum(row["train/d_fake"] for row in metrics.rows[-50:]) / 50
    spread = model.sample(64, generator=torch.Generator().manual_seed(0)).std(0).mean()  # per pixel, across z
    print(f"\nGAN MNIST 300 batches: D(real) - D(fake) peak {early:.2f} -> last-50 mean {late:.2f}, D(fake) "
          f"{d_fake:.2f}, sample spread {spread:.3f}, {time.perf_counter() - start:.1f} s")
    assert late < early
    # Not collapsed: D has not won outright and different z give different images (a collapsed G: 0.005 and 0.01).
    assert d_fake > 0.1 and spread > 0.05


def test_held_out_estimate_uses_the_same_noise_on_every_pass():
    model = MODELS["gan"]().eval()
    data = loader(model, n=24)
    first, second = (quiet_trainer().validate(model, data, verbose=False)[0]["val/loss"] for _ in range(2))
    assert first == second


def test_cli_fit_checkpoints_on_val_loss(tmp_path):
    from genlab.cli import main

    main(["fit", "--model=genlab.models.gan.DCGAN", "--model.width=4", "--model.latent_dim=4",
          "--model.objective=wgan-gp", "--data=FakeImages", "--data.image_shape=[1, 16, 16]", "--data.size=16",
          "--data.batch_size=8", "--trainer.max_epochs=1", "--trainer.accelerator=cpu",
          f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"])
    (best,) = tmp_path.glob("**/checkpoints/best-*.ckpt")
    restored = DCGAN.load_from_checkpoint(best)
    assert restored.objective == "wgan-gp" and restored.sample(2).shape == (2, 1, 16, 16)


def test_plain_ddp_strategy_gets_unused_parameter_detection():
    """G's and D's backward passes each leave the other network unused: `setup` switches DDP's detection on before
    the strategy wraps the model (the 2-process fit itself is in test_ddp.py)."""
    strategy = DDPStrategy()
    trainer = Trainer(accelerator="cpu", devices=1, strategy=strategy, logger=False)
    model = GAN(image_shape=(1, 8, 8), latent_dim=2, hidden=(8,))
    model.trainer = trainer
    model.setup("fit")
    assert strategy._ddp_kwargs.get("find_unused_parameters") is True
