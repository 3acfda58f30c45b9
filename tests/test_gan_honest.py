"""What the GAN reports and how it trains by default: the held-out divergence estimate against its closed form at
known discriminators (with and without one-sided label smoothing), and Gulrajani et al.'s WGAN-GP settings."""

import math

import pytest
import torch
from lightning import Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from genlab.models.gan import DCGAN, GAN
from genlab.models.gan_losses import js_estimate

LOG4 = math.log(4.0)
SHAPE = (1, 2, 2)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


class ThresholdDiscriminator(nn.Module):
    """D(x) = p_real on images brighter than 0 on average (the real ones here, all +1), p_fake elsewhere."""

    def __init__(self, p_real: float, p_fake: float) -> None:
        super().__init__()
        self.real_logit, self.fake_logit = logit(p_real), logit(p_fake)

    def forward(self, x: Tensor) -> Tensor:
        is_real = x.flatten(1).mean(1, keepdim=True) > 0
        return torch.where(is_real, self.real_logit, self.fake_logit)


class DarkGenerator(nn.Module):
    """Every fake is the black image (tanh(-20) = -1 in the discriminator's space)."""

    def forward(self, z: Tensor) -> Tensor:
        return torch.full((len(z), *SHAPE), -20.0)


def held_out_loss(real_label: float, p_real: float, p_fake: float) -> dict[str, float]:
    model = GAN(image_shape=SHAPE, latent_dim=2, hidden=(4,), real_label=real_label)
    model.generator, model.discriminator = DarkGenerator(), ThresholdDiscriminator(p_real, p_fake)
    data = DataLoader(TensorDataset(torch.ones(8, *SHAPE), torch.zeros(8)), batch_size=4)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return {k: float(v) for k, v in trainer.validate(model, data, verbose=False)[0].items()}


@pytest.mark.parametrize("real_label, p_real, p_fake, expected", [
    (1.0, 0.5, 0.5, 0.0),  # undecided D, no smoothing: identical laws, 2 JSD = 0
    (1.0, 1 - 1e-9, 1e-9, LOG4),  # D separates perfectly: disjoint laws, 2 JSD = log 4
    (0.9, 0.45, 0.45, 0.0),  # smoothing's optimal D on identical laws is 0.9 * 1/2
    (0.9, 0.9 - 1e-9, 1e-9, LOG4),  # ... and 0.9 on disjoint laws: the old estimate capped this at 1.281
])
def test_held_out_divergence_estimate_at_known_discriminators(real_label, p_real, p_fake, expected):
    logged = held_out_loss(real_label, p_real, p_fake)
    assert logged["val/loss"] == pytest.approx(expected, abs=1e-5)
    assert logged["val/js_estimate"] == logged["val/loss"]
    assert logged["val/d_real"] == pytest.approx(p_real, abs=1e-6)


def test_js_estimate_is_a_bound_below_log_4_for_any_discriminator():
    torch.manual_seed(0)
    real, fake = 8 * torch.randn(1000), 8 * torch.randn(1000)  # D above 0.9 on fakes too: a poor smoothed D
    for real_label in (1.0, 0.9, 0.7):
        estimate = js_estimate(real, fake, real_label)
        assert torch.isfinite(estimate) and estimate <= LOG4
    # at the smoothed optimum D = a p / (p + q), dividing by a recovers Goodfellow's D*: same value as unsmoothed
    d_star = torch.rand(50) * 0.98 + 0.01
    smoothed = torch.logit(0.9 * d_star)
    assert torch.allclose(js_estimate(smoothed, smoothed, 0.9), js_estimate(torch.logit(d_star), torch.logit(d_star)),
                          atol=1e-5)
    with pytest.raises(ValueError, match="real_label=1.5"):
        js_estimate(real, fake, 1.5)


# --- objective-dependent defaults ---
def adam_settings(model) -> list[tuple[float, tuple[float, float]]]:
    return [(opt.defaults["lr"], opt.defaults["betas"]) for opt in model.configure_optimizers()]


def critic_layers(model) -> set[type]:
    return {type(m) for m in model.discriminator.modules()}


@pytest.mark.parametrize("make", [lambda **kw: GAN(image_shape=(1, 8, 8), latent_dim=4, hidden=(16, 32), **kw),
                                  lambda **kw: DCGAN(image_shape=(1, 16, 16), latent_dim=4, width=4, **kw)])
def test_wgan_gp_uses_gulrajani_settings_and_bce_keeps_its_own(make):
    wgan = make(objective="wgan-gp")
    assert adam_settings(wgan) == [(1e-4, (0.0, 0.9)), (1e-4, (0.0, 0.9))] and wgan.n_critic == 5
    assert not critic_layers(wgan) & {nn.Dropout, nn.BatchNorm2d, nn.BatchNorm1d}
    bce = make()
    assert adam_settings(bce) == [(1e-4, (0.5, 0.999)), (4e-4, (0.5, 0.999))] and bce.n_critic == 1
    chosen = make(objective="wgan-gp", lr_d=3e-4, beta1=0.5, beta2=0.99)  # a value given is a value used
    assert adam_settings(chosen)[1] == (3e-4, (0.5, 0.99))


def test_mlp_critic_dropout_follows_the_objective():
    assert nn.Dropout in critic_layers(GAN(image_shape=(1, 8, 8), hidden=(8,)))
    assert GAN(image_shape=(1, 8, 8), hidden=(8,)).discriminator[3].p == 0.3
    assert nn.Dropout not in critic_layers(GAN(image_shape=(1, 8, 8), hidden=(8,), objective="wgan-gp"))
    assert nn.Dropout in critic_layers(GAN(image_shape=(1, 8, 8), hidden=(8,), objective="wgan-gp", dropout=0.2))
