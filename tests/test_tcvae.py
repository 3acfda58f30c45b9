"""beta-TCVAE (Chen et al., 2018): `tc_weight`, one more KL setting of every VAE-type preset."""

import math

import pytest
import torch
import yaml

from genlab.cli import main
from genlab.models import CVAE, VAE, ConvVAE, FlowVAE
from genlab.models.bottlenecks import GaussianBottleneck
from genlab.models.losses import minibatch_total_correlation

from adam_steps import losses_before_and_after

SHAPE = (1, 8, 8)
MLP = dict(image_shape=SHAPE, latent_dim=3, hidden=(16,))
CONV = dict(image_shape=SHAPE, latent_dim=3, widths=(4, 8))
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]


def binary_images(n: int = 8) -> torch.Tensor:
    return (torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(1)) < 0.5).float()


def gaussian_codes(size: int, correlation: float, std: float, latent_dim: int = 2, seed: int = 0):
    """Posterior means with unit variances and `correlation` between dimension 0 and the others, a common
    posterior `std`, and one draw z per image: (z, mean, std), each (size, latent_dim)."""
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(size, latent_dim, generator=generator)
    mean[:, 1:] = correlation * mean[:, :1] + math.sqrt(1 - correlation ** 2) * mean[:, 1:]
    scale = torch.full_like(mean, std)
    return mean + scale * torch.randn(size, latent_dim, generator=generator), mean, scale


def gaussian_total_correlation(correlation: float, std: float) -> float:
    """Closed form for two dimensions: q(z) = N(0, C) with C = [[1 + s^2, r], [r, 1 + s^2]], a Gaussian whose TC
    is -0.5 log(1 - rho^2), rho = r / (1 + s^2)."""
    rho = correlation / (1 + std ** 2)
    return -0.5 * math.log(1 - rho ** 2)


# --- the estimate ---
@pytest.mark.parametrize("correlation, std, tolerance", [(0.0, 0.5, 0.01), (0.8, 0.3, 0.06), (1.0, 0.1, 0.1)])
def test_total_correlation_estimate_matches_the_gaussian_closed_form(correlation, std, tolerance):
    """Within about 3.5 standard deviations of the one-draw estimate (measured over seeds)."""
    z, mean, scale = gaussian_codes(2000, correlation, std)
    estimate = minibatch_total_correlation(z, mean, scale).item()
    assert estimate == pytest.approx(gaussian_total_correlation(correlation, std), abs=tolerance)


def test_independent_codes_read_near_zero_and_correlated_codes_clearly_more():
    independent = minibatch_total_correlation(*gaussian_codes(2000, 0.0, 0.5)).item()
    correlated = minibatch_total_correlation(*gaussian_codes(2000, 1.0, 0.1)).item()
    assert abs(independent) < 0.01 and correlated > 1.5


def test_one_image_has_no_total_correlation_and_separated_copies_saturate_at_the_batch_bound():
    z, mean, scale = gaussian_codes(1, 0.0, 0.5)
    assert minibatch_total_correlation(z, mean, scale).item() == pytest.approx(0.0, abs=1e-5)
    # every dimension a copy of one code, the images far apart: (L - 1) log B, the most a batch can show
    mean = (10.0 * torch.arange(8.0))[:, None].expand(8, 4)
    scale = torch.full_like(mean, 1e-3)
    assert minibatch_total_correlation(mean, mean, scale).item() == pytest.approx(3 * math.log(8), abs=1e-4)


def test_total_correlation_has_finite_gradients_for_the_posterior():
    z, mean, scale = gaussian_codes(16, 0.5, 0.3, latent_dim=4)
    mean.requires_grad_(True)
    minibatch_total_correlation(mean + 0 * z, mean, scale).backward()
    assert torch.isfinite(mean.grad).all() and mean.grad.abs().sum() > 0


# --- the objective ---
@pytest.mark.parametrize("make", [lambda **kw: VAE(**MLP, **kw), lambda **kw: ConvVAE(**CONV, **kw),
                                  lambda **kw: VAE(**MLP, free_bits=0.1, **kw),
                                  lambda **kw: VAE(**MLP, prior="realnvp", prior_layers=2, **kw)],
                         ids=["VAE", "ConvVAE", "free_bits", "realnvp"])
def test_tc_weight_one_is_exactly_the_vae_and_another_adds_its_multiple_of_tc(make):
    x = binary_images()
    losses = {}
    for tc_weight in (None, 1.0, 6.0):
        torch.manual_seed(0)  # the same initial weights
        model = make() if tc_weight is None else make(tc_weight=tc_weight)
        torch.manual_seed(1)  # the same posterior draw
        losses[tc_weight] = model.loss(x)
    assert losses[1.0].keys() == losses[None].keys() and "tc" not in losses[None]
    assert all(torch.equal(losses[1.0][name], losses[None][name]) for name in losses[None])
    six = losses[6.0]
    assert all(torch.equal(six[name], losses[None][name]) for name in losses[None] if name != "loss")
    assert torch.allclose(six["loss"], losses[None]["loss"] + 5 * six["tc"])


def test_tc_weight_is_a_kl_setting_of_every_vae_preset():
    x, y = binary_images(), torch.arange(8) % 10
    assert "tc" in VAE(**MLP, tc_weight=6).loss(x) and "tc" in ConvVAE(**CONV, tc_weight=6).loss(x)
    assert "tc" in CVAE(**MLP, num_classes=10, tc_weight=0.5).loss(x, y)
    assert CVAE(**MLP, num_classes=10, tc_weight=6).bottleneck.weights_at(0)["tc"] == 5.0


def test_weights_are_constant_and_logged_terms_stable(monkeypatch):
    model = VAE(**MLP, tc_weight=6, kl_warmup_steps=10)
    assert [model.bottleneck.weights_at(step)["tc"] for step in (0, 5, None)] == [5.0, 5.0, 5.0]
    assert model.bottleneck.weights_at(0)["kl"] == 0.0  # the KL is annealed, the TC weight is not
    logged = {}
    monkeypatch.setattr(model, "log", lambda name, value, **kwargs: logged.__setitem__(name, value))
    model.eval()
    with torch.no_grad():
        model._shared_step((binary_images(), torch.zeros(8, dtype=torch.long)), "val")
    assert {"val/tc", "val/kl", "val/neg_elbo"} <= set(logged)
    assert torch.allclose(logged["val/neg_elbo"], logged["val/recon"] + logged["val/kl"])  # TC weight not applied


@pytest.mark.parametrize("make, message", [
    (lambda: VAE(**MLP, tc_weight=-1), "tc_weight=-1 is invalid; it must be >= 0"),
    (lambda: ConvVAE(**CONV, tc_weight=float("nan")), "tc_weight=nan is invalid"),
    (lambda: GaussianBottleneck(3, tc_weight=-0.5), "tc_weight=-0.5 is invalid"),
    (lambda: FlowVAE(**MLP, num_flows=2, tc_weight=6), "tc_weight=6 is not supported with flows"),
])
def test_bad_tc_weight_is_one_clear_line(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_flow_vae_keeps_tc_weight_one():
    assert "tc" not in FlowVAE(**MLP, num_flows=2, tc_weight=1).loss(binary_images())


def test_a_short_fit_lowers_the_tcvae_loss():
    before, after = losses_before_and_after(VAE(**MLP, tc_weight=6), binary_images(16))
    assert after < 0.9 * before


# --- the command line ---
@pytest.mark.parametrize("model", ["VAE", "ConvVAE"])
def test_cli_accepts_tc_weight(model, capsys):
    with pytest.raises(SystemExit):
        main(["fit", f"--model={model}", "--model.tc_weight", "6", "--data=FakeImages", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["tc_weight"] == 6.0


def test_cli_fits_a_tcvae_for_two_steps(tmp_path):
    cli = main(["fit", "--model=ConvVAE", "--model.tc_weight=6", "--model.latent_dim=4", "--model.widths=[8, 16]",
                "--data=FakeImages", "--data.image_shape=[1, 16, 16]", "--data.size=16", "--data.batch_size=8",
                "--trainer.max_steps=2", f"--trainer.default_root_dir={tmp_path}", *QUIET])
    assert cli.trainer.global_step == 2 and cli.model.bottleneck.tc_weight == 6.0
    assert torch.isfinite(cli.trainer.callback_metrics["train/tc"])
