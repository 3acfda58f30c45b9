"""Evaluation metrics against closed forms: IWAE on a linear-Gaussian model, active units, MIG, Fréchet distance,
reconstruction metrics, the Classifier feature network and the TestMetrics callback under trainer.test."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from lightning import Trainer
from torch import Tensor, nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence
from torch.utils.data import DataLoader, TensorDataset

from genlab.evaluation import TestMetrics
from genlab.metrics import (FeatureNetwork, ReconstructionMetrics, SampleDistances, active_units, bits_per_dim,
                            dequantize, evaluate_likelihood, importance_weighted_log_likelihood, likelihood_method,
                            mutual_information_gap)
from genlab.models import AE, PPCA, VAE, Classifier, FlowVAE
from genlab.models.losses import bernoulli_nll_per_image
from genlab.models.protocols import LikelihoodModel


class LinearGaussian(nn.Module):
    """z ~ N(0, I_L), x | z ~ N(W z + b, s^2 I_D): log p(x) = log N(x; b, W W^T + s^2 I) in closed form.

    q(z|x) is the exact posterior with its standard deviation inflated by `inflate`, so the ELBO has a real gap.
    """

    has_likelihood = True

    def __init__(self, dims: int = 6, latent_dim: int = 2, noise: float = 0.5, inflate: float = 3.0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.weight = torch.randn(dims, latent_dim, generator=generator, dtype=torch.float64)
        self.bias = torch.randn(dims, generator=generator, dtype=torch.float64)
        self.noise, self.inflate = noise, inflate

    def exact_log_likelihood(self, x: Tensor) -> Tensor:
        covariance = self.weight @ self.weight.T + self.noise**2 * torch.eye(len(self.bias), dtype=torch.float64)
        return MultivariateNormal(self.bias, covariance).log_prob(x.double())

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (B, L) and standard deviation (L,) of q(z|x): the exact posterior's, the deviation inflated."""
        precision = self.weight.T @ self.weight / self.noise**2 + torch.eye(self.weight.shape[1], dtype=torch.float64)
        covariance = torch.linalg.inv(precision)
        mean = (x.double() - self.bias) @ self.weight @ covariance / self.noise**2
        return mean, self.inflate * covariance.diagonal().sqrt(), covariance

    def log_importance_weights(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1,
                               generator: torch.Generator | None = None) -> Tensor:
        x = x.double()
        mean, std, _ = self.posterior(x)
        z = mean + std * torch.randn((num_samples, *mean.shape), generator=generator, dtype=torch.float64)
        log_q = Normal(mean, std).log_prob(z).sum(-1)
        log_px_z = Normal(z @ self.weight.T + self.bias, self.noise).log_prob(x).sum(-1)
        return log_px_z + Normal(0.0, 1.0).log_prob(z).sum(-1) - log_q


@pytest.fixture
def linear_gaussian() -> tuple[LinearGaussian, Tensor]:
    model = LinearGaussian()
    z = torch.randn(200, 2, dtype=torch.float64)
    return model, z @ model.weight.T + model.bias + model.noise * torch.randn(200, 6, dtype=torch.float64)


def test_iwae_matches_the_closed_form_and_rises_with_k(linear_gaussian):
    model, x = linear_gaussian
    assert isinstance(model, LikelihoodModel) and likelihood_method(AE(latent_dim=2, hidden=(8,))) is None
    exact = model.exact_log_likelihood(x).mean().item()
    bounds = []
    for k in (1, 4, 16, 64, 2000):
        log_px, elbo = importance_weighted_log_likelihood(model, x, num_samples=k, chunk_size=500,
                                                          generator=torch.Generator().manual_seed(k))
        bounds.append(log_px.mean().item())
    assert bounds == sorted(bounds) and exact - bounds[0] > 3  # a real gap at k = 1 that closes as k grows
    assert bounds[-1] <= exact + 0.01 and abs(bounds[-1] - exact) < 0.02
    mean, std, covariance = model.posterior(x)  # ELBO = log p(x) - KL(q(z|x) || p(z|x)), both Gaussian here
    gap = kl_divergence(MultivariateNormal(mean, torch.diag(std**2)), MultivariateNormal(mean, covariance))
    assert abs(elbo.mean().item() - (exact - gap.mean().item())) < 0.05


def test_evaluate_likelihood_reports_gap_and_uses_every_image(linear_gaussian):
    model, x = linear_gaussian
    batches = [(x[:150], torch.zeros(150)), (x[150:], torch.zeros(50))]
    result = evaluate_likelihood(model, batches, num_samples=1000, chunk_size=128)
    assert result["images"] == 200 and result["elbo_gap"] > 3
    assert abs(result["iwae_nll"] + model.exact_log_likelihood(x).mean().item()) < 0.03
    assert evaluate_likelihood(model, batches, max_images=10)["images"] == 10


def test_vae_importance_weights_average_to_the_elbo_of_its_loss():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 6, 6).round()
    for model in (VAE(image_shape=(1, 6, 6), latent_dim=3, hidden=(16,)),
                  FlowVAE(image_shape=(1, 6, 6), latent_dim=3, hidden=(16,), num_flows=2),
                  FlowVAE(image_shape=(1, 6, 6), latent_dim=3, hidden=(16,), flow="iaf", num_flows=2)):
        with torch.no_grad():
            log_w = model.log_importance_weights(x, num_samples=4000)
            terms = model.loss(x.repeat(4000, 1, 1, 1))  # the loss's own one-sample estimate, many times
        assert log_w.shape == (4000, 3) and model.has_likelihood
        assert abs(log_w.mean().item() + terms["recon"].item() + terms["kl"].item()) < 0.1


def test_vae_whose_decoder_ignores_z_has_exact_iwae():
    """p(x|z) = p(x) for every z, so every weight is p(x) p(z) / q(z|x) and IWAE must converge to log p(x)."""
    model = VAE(image_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
    last = model.decoder[0][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.normal_()
    x = torch.rand(5, 1, 4, 4).round()
    exact = -bernoulli_nll_per_image(last.bias.reshape(1, 1, 4, 4).expand(5, -1, -1, -1), x)
    log_px, _ = importance_weighted_log_likelihood(model, x, num_samples=3000, chunk_size=1000)
    assert torch.allclose(log_px.float(), exact, atol=0.05)


def test_ppca_likelihood_is_exact_and_bits_per_dim_follow_the_dequantisation():
    x = torch.randint(0, 256, (32, 1, 4, 4)).float() / 255
    model = PPCA(image_shape=(1, 4, 4), latent_dim=2).fit([x])
    assert likelihood_method(model) == "exact"
    result = evaluate_likelihood(model, [(x, torch.zeros(32))], dequantized=True)
    assert set(result) == {"exact_nll", "exact_bpd", "images"}
    assert math.isclose(result["exact_bpd"], bits_per_dim(result["exact_nll"], 16))
    assert bits_per_dim(0.0, 16) == pytest.approx(8.0)  # the uniform density on [0, 1)^D: 8 bits per 8-bit pixel
    deq = dequantize(x, torch.Generator().manual_seed(0))
    levels = torch.round(x * 255)
    assert (deq >= levels / 256).all() and (deq < (levels + 1) / 256).all()


def test_active_units_count_the_dimensions_that_vary():
    means = torch.zeros(500, 6)
    means[:, [1, 4]] = torch.randn(500, 2)  # used dimensions
    means[:, 2] = 0.05 * torch.randn(500)  # variance 0.0025: inactive under the 0.01 threshold
    count, variances = active_units(means)
    assert count == 2 and variances.shape == (6,)


def test_mig_is_near_one_for_copied_factors_and_near_zero_for_ignored_ones():
    factors = torch.stack([torch.randint(0, 3, (4000,)), torch.randint(0, 8, (4000,)).float() / 7], dim=1).float()
    copying = torch.cat([factors + 0.01 * torch.randn(4000, 2), torch.randn(4000, 2)], dim=1)
    mig, gaps = mutual_information_gap(copying, factors, bins=10)
    assert mig > 0.9 and gaps.shape == (2,)
    assert mutual_information_gap(torch.randn(4000, 4), factors, bins=10)[0] < 0.05
    # both latents copy the same factor: no gap for it, so MIG halves
    assert mutual_information_gap(factors[:, [0, 0]], factors, bins=10)[0] < 0.6


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_noise():
    projection = FeatureNetwork(nn.Sequential(nn.Flatten(), nn.Linear(64, 8)), num_features=8)
    images = torch.rand(300, 1, 8, 8)
    fids = []
    for noise in (0.0, 0.1, 0.3):
        distances = SampleDistances(projection, kid_subset_size=100, kid_subsets=10)
        distances.update(images, real=True)
        distances.update((images + noise * torch.randn_like(images)).clamp(0, 1), real=False)
        fids.append(distances.compute()["fid"])
    assert abs(fids[0]) < 1e-3 and fids[0] < fids[1] < fids[2]


def test_reconstruction_metrics_perfect_and_noisy():
    x = 0.8 * torch.rand(8, 1, 12, 12)  # x + 0.1 stays in [0, 1]
    perfect = ReconstructionMetrics((1, 12, 12))
    perfect.update(x, x)
    noisy = ReconstructionMetrics((1, 12, 12))
    noisy.update(x + 0.1, x)
    assert perfect.compute()["recon_mse"] == 0 and perfect.compute()["ssim"] == pytest.approx(1.0)
    assert noisy.compute()["recon_mse"] == pytest.approx(0.01, rel=1e-3)
    assert noisy.compute()["psnr"] == pytest.approx(20.0, rel=1e-3)


def separable_images(n: int = 64) -> DataLoader:
    """Two classes a classifier must tell apart: a bright left half or a bright right half, in binary pixels."""
    y = torch.randint(0, 2, (n,))
    x = (torch.rand(n, 1, 8, 8) < 0.3).float()
    x[y == 0, :, :, :4] = 1.0
    x[y == 1, :, :, 4:] = 1.0
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)


def quiet_trainer(tmp_path, **kwargs) -> Trainer:
    return Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=False, **kwargs)


def test_classifier_learns_and_gives_features(tmp_path):
    data = separable_images()
    classifier = Classifier(image_shape=(1, 8, 8), num_classes=2, widths=(4, 8), feature_dim=6, lr=1e-2)
    before = quiet_trainer(tmp_path).validate(classifier, data, verbose=False)[0]["val/accuracy"]
    quiet_trainer(tmp_path, max_epochs=8).fit(classifier, data)
    after = quiet_trainer(tmp_path).validate(classifier, data, verbose=False)[0]["val/accuracy"]
    assert after > max(before, 0.9)
    assert classifier.features(torch.rand(3, 1, 8, 8)).shape == (3, 6)
    with pytest.raises(ValueError, match="num_classes"):
        Classifier(num_classes=None)


def test_trainer_test_prints_the_table_and_writes_json(tmp_path, capsys):
    classifier = Classifier(image_shape=(1, 8, 8), num_classes=2, widths=(4,), feature_dim=4)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.fit(classifier, separable_images())
    ckpt = tmp_path / "classifier.ckpt"
    trainer.save_checkpoint(ckpt)
    data = DataLoader(TensorDataset(torch.rand(24, 1, 8, 8).round(), torch.zeros(24, dtype=torch.long)), batch_size=8)
    callback = TestMetrics(num_importance_samples=8, chunk_size=3, num_fid_samples=16, kid_subset_size=8,
                           classifier_checkpoint=str(ckpt))
    model = VAE(image_shape=(1, 8, 8), latent_dim=2, hidden=(8,))
    logged = quiet_trainer(tmp_path, callbacks=[callback]).test(model, data, verbose=False)[0]
    table = capsys.readouterr().out
    saved = json.loads((tmp_path / "test_metrics.json").read_text())
    expected = {"iwae_nll", "neg_elbo", "elbo_gap", "elbo_recon", "elbo_kl", "recon_mse", "psnr", "ssim",
                "active_units", "fd_classifier", "kd_classifier", "kd_classifier_std"}
    assert expected <= set(saved) and all(f"test/{name}" in logged for name in expected)
    assert all(name in table for name in expected) and "protocol" in table
    assert saved["protocol"]["importance_samples"] == 8
    assert saved["protocol"]["fd_classifier"]["generated_images"] == 16
    assert "Classifier" in saved["protocol"]["fd_classifier"]["feature_network"]
    assert len(saved["per_dim"]["kl_per_dim"]) == 2
    assert saved["elbo_gap"] > 0 and saved["iwae_nll"] < saved["neg_elbo"]


def test_callback_skips_what_does_not_apply_and_computes_mig(tmp_path, capsys):
    """An AE has no likelihood; without a classifier and offline, FID is skipped with a note; MIG comes from the
    datamodule's known factors."""
    factors = torch.stack([torch.arange(32) % 2, torch.arange(32) // 16], dim=1).float()
    images = torch.zeros(32, 1, 8, 8)
    images[:, 0, 0, 0], images[:, 0, 7, 7] = factors[:, 0], factors[:, 1]
    data = DataLoader(TensorDataset(images, torch.zeros(32, dtype=torch.long)), batch_size=8)
    callback = TestMetrics(num_fid_samples=8)
    model = AE(image_shape=(1, 8, 8), latent_dim=2, hidden=(8,))
    quiet_trainer(tmp_path, callbacks=[callback]).test(model, data, verbose=False)
    saved = json.loads((tmp_path / "test_metrics.json").read_text())
    assert "recon_mse" in saved and not any(name.endswith(("_nll", "elbo")) for name in saved)
    assert "active_units" not in saved
    if "fid" not in saved:  # offline: Inception unavailable -> a note, not a crash
        assert any("FID/KID skipped" in note for note in saved["protocol"]["notes"])
    # MIG through the callback, with a datamodule exposing factors (Shapes does): an encoder that copies them
    copier = SimpleNamespace(latent_dim=4, device=torch.device("cpu"), encode=lambda x, y=None: torch.cat(
        [x[:, 0, 0, :1], x[:, 0, 7, 7:], torch.zeros(len(x), 2)], dim=1))
    callback.protocol = {"test_images": 32, "notes": []}
    callback.metrics, callback.per_dim = {}, {}
    trainer = SimpleNamespace(datamodule=SimpleNamespace(factors=lambda split: factors, factor_names=["a", "b"]))
    callback._mig(trainer, copier, [(images[i:i + 8], torch.zeros(8)) for i in range(0, 32, 8)])
    assert callback.metrics["mig"] > 0.95
