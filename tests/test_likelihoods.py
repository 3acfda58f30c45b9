"""Reconstruction likelihoods against closed forms: the 8-bit ones are normalised over the 256 levels, a model whose
p(x|z) ignores z has an exact bits/dim, the learned Gaussian sigma is one parameter per data dimension."""

import json
import math

import pytest
import torch
from torch.distributions import Normal
from torch.utils.data import DataLoader, TensorDataset

from genlab.evaluation import TestMetrics
from genlab.metrics import evaluate_likelihood
from genlab.models import VAE
from genlab.models.losses import (LIKELIHOODS, discretized_gaussian_log_prob, discretized_logistic_mixture_log_prob,
                                  likelihood_mean, output_channels, reconstruction_nll_per_image)
from genlab.models.presets import AE, ConvVAE

LEVELS = torch.arange(256, dtype=torch.float64) / 255  # every value an 8-bit pixel can take


@pytest.mark.parametrize("mean, log_scale", [(0.5, -3.0), (0.0, -6.9), (1.3, 0.5), (-0.2, -1.0), (0.77, -9.0)])
def test_discretized_gaussian_probabilities_of_a_pixel_sum_to_one(mean, log_scale):
    log_p = discretized_gaussian_log_prob(torch.full((256,), mean), torch.full((256,), log_scale), LEVELS)
    assert torch.isfinite(log_p).all() and log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_logistic_mixture_probabilities_of_a_pixel_sum_to_one(seed):
    generator = torch.Generator().manual_seed(seed)
    components = 5
    params = torch.randn(3 * components, generator=generator) * 2  # logits, means, log scales
    log_p = discretized_logistic_mixture_log_prob(params[:, None].expand(-1, 256), LEVELS, dim=0)
    assert torch.isfinite(log_p).all() and log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_logistic_mixture_matches_the_logistic_cdf_by_hand():
    mean, scale = 0.4, 0.05
    cdf = lambda v: torch.sigmoid((v - mean) / scale)  # noqa: E731
    upper = torch.where(LEVELS == 1, torch.ones(()), cdf(LEVELS + 0.5 / 255))
    lower = torch.where(LEVELS == 0, torch.zeros(()), cdf(LEVELS - 0.5 / 255))
    params = torch.tensor([0.0, mean, math.log(scale)], dtype=torch.float64)[:, None].expand(-1, 256)
    log_p = discretized_logistic_mixture_log_prob(params, LEVELS, dim=0)
    assert torch.allclose(log_p.exp(), upper - lower, atol=1e-7)


def test_decoder_outputs_the_channels_the_likelihood_needs():
    assert output_channels("bernoulli", 3, 10) == 3 and output_channels("discretized_gaussian", 3, 10) == 6
    assert output_channels("logistic_mixture", 3, 4) == 36
    model = ConvVAE(image_shape=(3, 8, 8), latent_dim=4, widths=(8,), likelihood="logistic_mixture",
                    mixture_components=4)
    z = torch.randn(2, 4)
    assert model.decoder(z).shape == (2, 36, 8, 8) and model.hparams["mixture_components"] == 4
    for likelihood in LIKELIHOODS:
        model = ConvVAE(image_shape=(3, 8, 8), latent_dim=4, widths=(8,), likelihood=likelihood)
        images = model.decode(z)
        assert images.shape == (2, 3, 8, 8) and 0 <= images.min() and images.max() <= 1
        assert torch.isfinite(model.loss(torch.rand(2, 3, 8, 8))["loss"])
    with pytest.raises(ValueError, match="likelihood='poisson'"):
        VAE(likelihood="poisson")
    with pytest.raises(ValueError, match="mixture_components=0"):
        VAE(likelihood="logistic_mixture", mixture_components=0)
    with pytest.raises(ValueError, match="30 channels"):  # a decoder built for another likelihood
        reconstruction_nll_per_image(torch.zeros(1, 4, 2, 2), torch.zeros(1, 1, 2, 2), "logistic_mixture")


def test_mixture_decode_is_the_clamped_mixture_mean():
    params = torch.tensor([[0.0, math.log(3.0), 0.2, 0.6, -3.0, -3.0]]).reshape(1, 6, 1, 1)  # weights 1/4, 3/4
    assert likelihood_mean(params, "logistic_mixture", 1).item() == pytest.approx(0.25 * 0.2 + 0.75 * 0.6)
    assert likelihood_mean(torch.tensor([2.0, -1.0]).reshape(1, 2, 1, 1), "discretized_gaussian", 1).item() == 1.0


def test_learned_gaussian_sigma_has_one_parameter_per_dimension():
    model = AE(image_shape=(1, 4, 5), latent_dim=2, hidden=(8,), likelihood="gaussian_learned", sigma=0.3)
    assert model.log_sigma.shape == (1, 4, 5) and torch.allclose(model.log_sigma.exp(), torch.tensor(0.3))
    with torch.no_grad():
        model.log_sigma.normal_()
    x = torch.rand(3, 1, 4, 5)
    mean = model.reconstruct(x)
    expected = -Normal(mean, model.log_sigma.exp()).log_prob(x).flatten(1).sum(1).mean()
    assert torch.allclose(model.loss(x)["recon"], expected, atol=1e-4)
    model.loss(x)["loss"].backward()
    assert model.log_sigma.grad is not None and model.log_sigma.grad.abs().sum() > 0
    assert "log_sigma" in model.state_dict()


def constant_decoder_vae(likelihood: str, params: torch.Tensor) -> VAE:
    """A VAE with q(z|x) = p(z) and p(x|z) the same for every z: log p(x) = log p(x|z) exactly, for any k."""
    model = VAE(image_shape=(1, 2, 3), latent_dim=2, hidden=(8,), likelihood=likelihood, mixture_components=1)
    with torch.no_grad():
        for layer in (model.decoder[0][-1], model.encoder[1][-1]):
            layer.weight.zero_()
            layer.bias.zero_()
        model.decoder[0][-1].bias.copy_(params.repeat_interleave(6))
    return model.eval()


@pytest.mark.parametrize("likelihood, params, cdf", [
    ("logistic_mixture", [0.0, 0.4, math.log(0.1)], lambda v: torch.sigmoid((v - 0.4) / 0.1)),
    ("discretized_gaussian", [0.6, math.log(0.2)], Normal(0.6, 0.2).cdf),
])
def test_bits_per_dim_of_a_known_model_match_the_closed_form(likelihood, params, cdf, tmp_path):
    model = constant_decoder_vae(likelihood, torch.tensor(params))
    levels = torch.tensor([0, 3, 100, 128, 200, 255, 7, 255, 0, 51, 52, 90]).reshape(2, 1, 2, 3)
    x = levels.float() / 255
    upper = torch.where(levels == 255, 1.0, cdf(x.double() + 0.5 / 255))
    lower = torch.where(levels == 0, 0.0, cdf(x.double() - 0.5 / 255))
    nll = -(upper - lower).log().flatten(1).sum(1).mean().item()
    result = evaluate_likelihood(model, [(x, torch.zeros(2))], num_samples=7, discrete=True)
    assert result["iwae_nll"] == pytest.approx(nll, rel=1e-5) and result["neg_elbo"] == pytest.approx(nll, rel=1e-5)
    assert result["iwae_bpd"] == pytest.approx(nll / (6 * math.log(2)), rel=1e-5)
    callback = TestMetrics(num_importance_samples=3, num_fid_samples=0, save_dir=str(tmp_path))
    callback.protocol = {"notes": []}
    callback.metrics = {}
    callback._likelihood(model, [(x, torch.zeros(2, dtype=torch.long))])
    assert callback.metrics["iwae_bpd"] == pytest.approx(nll / (6 * math.log(2)), rel=1e-5)
    assert callback.metrics["neg_elbo_bpd"] == pytest.approx(callback.metrics["iwae_bpd"], rel=1e-5)
    assert "dequantization" not in callback.protocol and callback.protocol["data_type"] == "8bit"


def test_genlab_test_reports_bits_per_dim_for_an_8bit_likelihood(tmp_path):
    from lightning import Trainer
    model = ConvVAE(image_shape=(3, 8, 8), latent_dim=4, widths=(8,), likelihood="logistic_mixture",
                    mixture_components=2)
    images = torch.randint(0, 256, (8, 3, 8, 8)).float() / 255
    callback = TestMetrics(num_importance_samples=4, num_fid_samples=0)
    Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
            callbacks=[callback], enable_model_summary=False).test(
        model, DataLoader(TensorDataset(images, torch.zeros(8, dtype=torch.long)), batch_size=4), verbose=False)
    saved = json.loads((tmp_path / "test_metrics.json").read_text())
    assert {"iwae_nll", "iwae_bpd", "neg_elbo_bpd", "elbo_recon"} <= set(saved)
    assert saved["iwae_bpd"] == pytest.approx(saved["iwae_nll"] / (3 * 64 * math.log(2)))
    assert "discrete" in saved["protocol"]["likelihood"]


@pytest.mark.parametrize("likelihood, channels", [("logistic_mixture", 9), ("discretized_gaussian", 2)])
def test_8bit_likelihoods_have_finite_gradients_at_extreme_parameters(likelihood, channels):
    out = (torch.randn(64, channels, 1, 1) * 30).requires_grad_()  # scales from e^-30 to e^30, means far outside
    x = LEVELS[torch.randint(0, 256, (64,))].float().reshape(64, 1, 1, 1)
    x[:8], x[8:16] = 0.0, 1.0  # the end bins
    nll = reconstruction_nll_per_image(out, x, likelihood)
    nll.sum().backward()
    assert torch.isfinite(nll).all() and torch.isfinite(out.grad).all()
