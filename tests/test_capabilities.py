"""Declared capabilities: which protocols each model class satisfies, what callbacks and metrics do with a model that
lacks one, and the learned-prior hook of `GaussianBottleneck` (a `RealNVPPrior` over a VAE's latent)."""

import json
import math

import pytest
import torch
from lightning import Trainer
from torch import Tensor, nn
from tiny_data import SHAPE, TinyImages

from genlab.callbacks import Reconstructions, SampleGrid, default_callbacks, rank_dimensions
from genlab.evaluation import TestMetrics
from genlab.evaluation import PredictionWriter
from genlab.models import (AE, CVAE, DCGAN, GAN, PPCA, VAE, VQVAE, BaselineNN, Classifier, ConvAE, ConvVAE,
                           DenoisingAE, FlowVAE)
from genlab.models.autoencoder import Autoencoder
from genlab.models.blocks import MLPDecoder, MLPEncoder
from genlab.models.bottlenecks import FlowGaussianBottleneck, GaussianBottleneck, IdentityBottleneck
from genlab.models.flows import PlanarFlow
from genlab.models.hierarchical import HierarchicalVAE
from genlab.models.losses import gaussian_kl, standard_normal_log_prob
from genlab.models.protocols import (CodebookModel, Conditional, Denoiser, Encoder, ExactLikelihood, FeatureExtractor,
                                     KLPerDimension, LatentModel, LatentPrior, LikelihoodModel, Sampler, SpatialLatent)
from genlab.models.quantizer import VectorQuantizer
from genlab.models.realnvp import RealNVP, RealNVPPrior

HIDDEN = dict(hidden=(16,))
MODELS = {
    "AE": lambda: AE(SHAPE, latent_dim=4, **HIDDEN),
    "VAE": lambda: VAE(SHAPE, latent_dim=4, **HIDDEN),
    "ConvAE": lambda: ConvAE(SHAPE, latent_dim=4, widths=(8,)),
    "ConvVAE": lambda: ConvVAE(SHAPE, latent_dim=4, widths=(8,)),
    "DenoisingAE": lambda: DenoisingAE(SHAPE, widths=(4,)),
    "CVAE_label": lambda: CVAE(SHAPE, latent_dim=4, num_classes=3, **HIDDEN),
    "CVAE_quarter": lambda: CVAE(SHAPE, latent_dim=4, condition="quarter", **HIDDEN),
    "BaselineNN": lambda: BaselineNN(SHAPE, **HIDDEN),
    "FlowVAE": lambda: FlowVAE(SHAPE, latent_dim=4, num_flows=1, **HIDDEN),
    "VQVAE": lambda: VQVAE(SHAPE, num_hiddens=8, num_residual_hiddens=4, num_residual_layers=1, num_embeddings=8,
                           embedding_dim=4),
    "HierarchicalVAE": lambda: HierarchicalVAE(SHAPE, resolutions=(4, 8), latent_channels=2, width=8),
    "PPCA": lambda: PPCA(SHAPE, latent_dim=2),
    "RealNVP": lambda: RealNVP(SHAPE, num_scales=1, hidden=4, num_blocks=1),
    "GAN": lambda: GAN(SHAPE, latent_dim=4, hidden=(16,)),
    "DCGAN": lambda: DCGAN(SHAPE, latent_dim=4, width=4),
    "Classifier": lambda: Classifier(SHAPE, num_classes=3, widths=(4,), feature_dim=4),
}
# model -> the capabilities it declares (protocol, or protocol plus its flag); everything else it must not claim
CAPABILITIES = {
    "AE": {"latent", "sampler"},
    "VAE": {"latent", "sampler", "kl_per_dim", "iwae"},
    "ConvAE": {"latent", "sampler"},
    "ConvVAE": {"latent", "sampler", "kl_per_dim", "iwae"},
    "DenoisingAE": {"latent", "sampler", "denoiser"},
    "CVAE_label": {"latent", "sampler", "kl_per_dim", "iwae", "conditional"},
    "CVAE_quarter": {"latent", "sampler", "kl_per_dim", "iwae", "conditional"},
    "BaselineNN": {"latent", "sampler", "conditional"},
    "FlowVAE": {"latent", "sampler", "kl_per_dim", "iwae"},
    "VQVAE": {"latent", "spatial", "codebook"},
    "HierarchicalVAE": {"latent", "sampler", "kl_per_dim", "iwae"},
    "PPCA": {"latent", "sampler", "exact"},
    "RealNVP": {"sampler", "exact"},
    "GAN": {"sampler"},
    "DCGAN": {"sampler"},
    "Classifier": {"features"},
}


def declared(model: object) -> set[str]:
    """The capabilities `model` declares, read the way callbacks and metrics read them."""
    checks = {
        "latent": isinstance(model, LatentModel),
        "sampler": isinstance(model, Sampler),
        "denoiser": isinstance(model, Denoiser),
        "conditional": isinstance(model, Conditional) and model.condition_kind is not None,
        "kl_per_dim": isinstance(model, KLPerDimension) and model.has_kl_per_dim,
        "iwae": isinstance(model, LikelihoodModel) and model.has_likelihood,
        "exact": isinstance(model, ExactLikelihood),
        "spatial": isinstance(model, SpatialLatent),
        "codebook": isinstance(model, CodebookModel),
        "features": isinstance(model, FeatureExtractor),
    }
    return {name for name, present in checks.items() if present}


@pytest.mark.parametrize("name", MODELS)
def test_each_model_declares_exactly_its_capabilities(name):
    assert declared(MODELS[name]()) == CAPABILITIES[name]


def test_every_bottleneck_derives_from_the_base_and_gaussian_is_no_identity():
    from genlab.models.bottlenecks import Bottleneck
    for bottleneck in (IdentityBottleneck(2), GaussianBottleneck(2), VectorQuantizer(4, 2),
                       FlowGaussianBottleneck(GaussianBottleneck(2), [PlanarFlow(2)])):
        assert isinstance(bottleneck, Bottleneck)
    assert not issubclass(GaussianBottleneck, IdentityBottleneck)


# --- what callbacks and metrics do with a model that lacks a capability ---
def vqvae() -> VQVAE:
    return MODELS["VQVAE"]().eval()


def test_figures_of_a_vqvae_omit_samples_and_draw_the_rest():
    model, data = vqvae(), TinyImages()
    figures = [c for c in default_callbacks(model) if hasattr(c, "draw")]
    assert figures and not any(isinstance(c, SampleGrid) for c in figures)
    for callback in figures:
        callback.check(model)
        assert callback.draw(model, data).axes
    with pytest.raises(TypeError, match="VQVAE lacks sample"):
        SampleGrid().check(model)


def test_predictions_and_test_metrics_of_a_vqvae_have_no_samples(tmp_path):
    model, data = vqvae(), TinyImages()
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path, callbacks=[PredictionWriter(num_samples=4, out_dir=str(tmp_path)),
                                                            TestMetrics(num_fid_samples=8, save_dir=str(tmp_path))])
    trainer.predict(model, data.val_dataloader())
    assert (tmp_path / "reconstructions.pt").is_file() and not (tmp_path / "samples.pt").exists()
    trainer.test(model, data.val_dataloader(), verbose=False)
    saved = json.loads((tmp_path / "test_metrics.json").read_text())
    assert "recon_mse" in saved and "fid" not in saved and not saved["protocol"]["notes"]


def test_reconstructions_of_a_denoiser_show_its_corruption_and_of_an_autoencoder_do_not():
    denoiser, data = DenoisingAE(SHAPE, widths=(4,)).eval(), TinyImages()
    labels = lambda fig: [t.get_text() for t in fig.axes[0].get_yticklabels()]  # noqa: E731
    assert labels(Reconstructions(num_images=4).draw(denoiser, data)) == ["clean", "noisy", "denoised"]
    assert labels(Reconstructions(num_images=4).draw(AE(SHAPE, latent_dim=4, **HIDDEN), data)) == [
        "original", "reconstruction"]
    assert not isinstance(VAE(SHAPE, latent_dim=4, **HIDDEN), Denoiser)  # `corruption` None: not a denoiser


class LabelOnly(nn.Module):
    """A label-conditioned sampler that refuses to sample without its condition."""

    latent_dim, device, condition_kind = 2, torch.device("cpu"), "label"

    def sample(self, num_samples: int, y: Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        assert y is not None and len(y) == num_samples, "sampled without a condition"
        return y.float().view(-1, 1, 1, 1).expand(-1, *SHAPE) / 3


def test_sample_grid_reads_the_condition_kind_instead_of_trying_to_sample():
    fig = SampleGrid(num_samples=4).draw(LabelOnly(), TinyImages())
    assert fig.axes


def test_test_metrics_skip_sample_distances_of_a_conditional_model(tmp_path):
    model = CVAE(SHAPE, latent_dim=2, num_classes=3, **HIDDEN)
    callback = TestMetrics(num_importance_samples=2, num_fid_samples=8, save_dir=str(tmp_path))
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[callback], default_root_dir=tmp_path)
    trainer.test(model, TinyImages().val_dataloader(), verbose=False)
    assert any("conditional" in note for note in callback.protocol["notes"]) and "fid" not in callback.metrics


def test_test_metrics_refuse_a_classifier_class_without_features(tmp_path):
    vae = VAE(SHAPE, latent_dim=2, **HIDDEN)
    path = tmp_path / "vae.ckpt"
    torch.save({"state_dict": vae.state_dict(), "hyper_parameters": dict(vae.hparams),
                "pytorch-lightning_version": "2.6.0"}, path)
    callback = TestMetrics(classifier_checkpoint=str(path), classifier_class="genlab.models.VAE")
    with pytest.raises(TypeError, match="not a FeatureExtractor"):
        callback.setup(None, vae, "test")


# --- the prior hook: GaussianBottleneck(prior=...) ---
def perturbed_prior(latent_dim: int = 4, seed: int = 0) -> RealNVPPrior:
    """A RealNVPPrior moved off the identity, so that its density differs from N(0, I)."""
    prior = RealNVPPrior(latent_dim, num_layers=2, hidden=8)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in prior.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return prior


def vae_with(prior: nn.Module | None, latent_dim: int = 4) -> Autoencoder:
    bottleneck = GaussianBottleneck(latent_dim, prior=prior)
    return Autoencoder(MLPEncoder(SHAPE, bottleneck.in_features, (16,)), bottleneck,
                       MLPDecoder(latent_dim, SHAPE, (16,)), SHAPE)


def test_realnvp_prior_is_a_latent_prior_and_a_bad_prior_is_refused():
    assert isinstance(RealNVPPrior(4), LatentPrior)
    with pytest.raises(ValueError, match="LatentPrior"):
        GaussianBottleneck(4, prior=nn.Linear(4, 4))
    with pytest.raises(ValueError, match="latent_dim=3"):
        GaussianBottleneck(3, prior=RealNVPPrior(4))


def test_without_a_prior_the_kl_is_the_closed_form():
    h = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    bottleneck = GaussianBottleneck(4)
    q = bottleneck.posterior(h)
    _, terms = bottleneck(h)
    assert torch.equal(terms["kl"], gaussian_kl(q.loc, q.scale).sum(-1).mean()) and bottleneck.has_kl_per_dim


def test_monte_carlo_kl_against_an_identity_flow_averages_to_the_closed_form():
    h = torch.randn(1, 8, generator=torch.Generator().manual_seed(1)).repeat(20000, 1)
    bottleneck = GaussianBottleneck(4, prior=RealNVPPrior(4))  # zero-initialised couplings: exactly N(0, I)
    q = bottleneck.posterior(h[:1])
    closed_form = gaussian_kl(q.loc, q.scale).sum()
    torch.manual_seed(0)
    z, terms = bottleneck(h)
    kl = q.log_prob(z).sum(-1) - standard_normal_log_prob(z)  # the per-image estimates the term averages
    torch.testing.assert_close(terms["kl"], kl.mean())
    assert abs(terms["kl"] - closed_form) < 4 * kl.std() / math.sqrt(len(kl))
    assert not bottleneck.has_kl_per_dim and "kl_free_bits" not in terms


def test_free_bits_with_a_learned_prior_floor_the_whole_code():
    h = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))
    bottleneck = GaussianBottleneck(4, free_bits=100.0, prior=perturbed_prior())
    _, terms = bottleneck(h)
    assert terms["kl_free_bits"] == 400.0 and bottleneck.weights_at(None) == {"kl_free_bits": 1.0}


def test_sample_prior_and_flow_bottleneck_use_the_learned_prior():
    prior = perturbed_prior()
    base = GaussianBottleneck(4, prior=prior)
    draw = lambda sampler: sampler(3, torch.Generator().manual_seed(0), 0.5)  # noqa: E731
    torch.testing.assert_close(draw(base.sample_prior), draw(prior.sample))
    flow = FlowGaussianBottleneck(base, [PlanarFlow(4)])
    z = torch.randn(5, 4)
    torch.testing.assert_close(flow.prior_log_prob(z), prior.log_prob(z))
    torch.testing.assert_close(draw(flow.sample_prior), draw(prior.sample))


def test_iwae_with_a_realnvp_prior_is_finite_and_uses_its_density():
    x = TinyImages().x[:3]
    prior = perturbed_prior()
    model = vae_with(prior).eval()
    log_w = model.log_importance_weights(x, num_samples=5, generator=torch.Generator().manual_seed(0))
    assert log_w.shape == (5, 3) and torch.isfinite(log_w).all()
    z, _ = model.bottleneck.sample_with_log_prob(model.encoder(x), 5, torch.Generator().manual_seed(0))
    reference = vae_with(None)
    reference.load_state_dict(model.state_dict(), strict=False)  # the same encoder and decoder, prior N(0, I)
    log_w_normal = reference.eval().log_importance_weights(x, num_samples=5,
                                                           generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(log_w - log_w_normal, prior.log_prob(z) - standard_normal_log_prob(z))


def test_a_vae_with_a_learned_prior_trains_it_and_draws_from_it():
    data = TinyImages()
    model = vae_with(RealNVPPrior(4, num_layers=2, hidden=8))
    before = [p.detach().clone() for p in model.bottleneck.prior.parameters()]
    Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False).fit(model, data.train_dataloader())
    after = list(model.bottleneck.prior.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after))  # the KL's gradient reaches the prior
    samples = model.eval().sample(4, generator=torch.Generator().manual_seed(0), temperature=0.5)
    assert samples.shape == (4, *SHAPE) and samples.isfinite().all()
    assert rank_dimensions(model, data.x)[2] == "var"  # no KL per dimension against a learned prior
    with pytest.raises(TypeError, match="no KL term per latent dimension"):
        model.kl_per_dim(data.x)


def test_encoder_protocol_is_all_mig_needs():
    class Codes(nn.Module):
        latent_dim = 2

        def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
            return x.flatten(1)[:, :2]

    assert isinstance(Codes(), Encoder) and not isinstance(Codes(), LatentModel)


def test_ppca_stochastic_reconstructions_follow_the_exact_posterior():
    torch.manual_seed(0)
    data = torch.rand(400, 1, 4, 4) * 0.5 + 0.25
    model = PPCA(image_shape=(1, 4, 4), latent_dim=2).fit([data]).eval()
    x = data[:1]
    seeded = [model.reconstruct(x, stochastic=True, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(seeded[0], seeded[1]) and not torch.equal(seeded[0], seeded[2])
    # the spread of decoded draws matches W sigma^2 M^-1 W^T, the covariance of W z under q(z|x)
    generator = torch.Generator().manual_seed(0)
    samples = torch.stack([model.reconstruct(x, stochastic=True, generator=generator) for _ in range(4000)])
    covariance = model.noise_var * torch.linalg.inv(model._posterior_precision())
    expected = (model.weight @ covariance @ model.weight.T).diagonal()
    assert torch.allclose(samples.flatten(1).var(0), expected, rtol=0.15)
    assert torch.allclose(samples.flatten(1).mean(0), model.reconstruct(x).flatten(), atol=0.01)


def test_gan_temperature_scales_the_noise():
    model = GAN(image_shape=(1, 8, 8), latent_dim=3, hidden=(16,)).eval()
    cold = [model.sample(2, generator=torch.Generator().manual_seed(s), temperature=0.0) for s in (0, 1)]
    assert torch.equal(cold[0], cold[1])  # z = 0 whatever the draw
    warm = [model.sample(2, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert not torch.equal(warm[0], warm[1])
