"""Contract tests: every model gets every test by being listed once in MODELS."""

import math

import pytest
import torch
from lightning import Trainer
from torch.distributions import Normal, kl_divergence
from torch.utils.data import DataLoader, TensorDataset

from genlab.models import AE, VAE, ConvAE, ConvVAE, LatentModel, Sampler
from genlab.models.blocks import ConvDecoder, ConvEncoder
from genlab.models.losses import bernoulli_nll, gaussian_nll

SHAPE = (1, 16, 12)  # non-square on purpose: Frey faces are 28x20
MODELS = {
    "ae": lambda: AE(image_shape=SHAPE, latent_dim=4, hidden=(32,)),
    "vae": lambda: VAE(image_shape=SHAPE, latent_dim=4, hidden=(32,)),
    "conv_ae": lambda: ConvAE(image_shape=SHAPE, latent_dim=4, widths=(8, 16)),
    "conv_vae": lambda: ConvVAE(image_shape=SHAPE, latent_dim=4, widths=(8, 16), batch_norm=True),
    "conv_vae_gaussian": lambda: ConvVAE(image_shape=SHAPE, latent_dim=4, widths=(8, 16), likelihood="gaussian"),
}
TERMS = {"ae": {"loss", "recon"}, "conv_ae": {"loss", "recon"}}


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, *SHAPE)


@pytest.mark.parametrize("name", MODELS)
def test_protocol_shapes_and_range(name, images):
    model = MODELS[name]().eval()
    assert isinstance(model, LatentModel) and isinstance(model, Sampler)
    z = model.encode(images)
    assert z.shape == (4, model.latent_dim)
    sample = model.sample(3, generator=torch.Generator().manual_seed(0))
    for out in (model.decode(z), model.reconstruct(images), sample):
        assert out.shape[1:] == SHAPE and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("name", MODELS)
def test_sampling_is_reproducible_and_temperature_spreads(name):
    model = MODELS[name]().eval()
    draw = lambda t: model.sample(64, generator=torch.Generator().manual_seed(1), temperature=t)  # noqa: E731
    assert torch.equal(draw(1.0), draw(1.0))
    assert draw(20**0.5).std() > draw(0.1).std()


@pytest.mark.parametrize("name", MODELS)
def test_loss_terms_are_named_finite_scalars_that_sum(name, images):
    terms = MODELS[name]().loss(images)
    assert set(terms) == TERMS.get(name, {"loss", "recon", "kl"})
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    assert torch.allclose(terms["loss"], terms["recon"] + terms.get("kl", 0.0))


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_the_encoder(name, images):
    model = MODELS[name]()
    model.loss(images)["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_kl_term_equals_closed_form(images):
    model = VAE(image_shape=SHAPE, latent_dim=4, hidden=(32,))
    h = model.encoder(images)
    mean, log_var = h.chunk(2, dim=-1)
    q = Normal(mean, torch.exp(0.5 * log_var))
    expected = kl_divergence(q, Normal(0.0, 1.0)).sum(-1).mean()
    _, terms = model.bottleneck(h)
    assert torch.allclose(terms["kl"], expected, atol=1e-5)
    by_hand = (0.5 * (mean**2 + log_var.exp() - 1 - log_var)).sum(-1).mean()  # Kingma & Welling, appendix B
    assert torch.allclose(terms["kl"], by_hand, atol=1e-5)


def test_beta_weights_the_kl(images):
    model = VAE(image_shape=SHAPE, latent_dim=4, hidden=(32,), beta=4.0)
    torch.manual_seed(0)
    terms = model.loss(images)
    assert torch.allclose(terms["loss"], terms["recon"] + 4.0 * terms["kl"])


def test_reconstruction_likelihoods_match_closed_forms():
    x = torch.rand(3, 1, 4, 5)
    # logits 0 -> p = 0.5 everywhere: -log p(x) = D * log 2 per image, whatever x is
    assert torch.allclose(bernoulli_nll(torch.zeros_like(x), x), torch.tensor(20 * math.log(2)))
    mean = torch.rand_like(x)
    expected = -Normal(mean, 0.3).log_prob(x).flatten(1).sum(1).mean()
    assert torch.allclose(gaussian_nll(mean, x, 0.3), expected, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 28, 20), (3, 32, 32), (3, 64, 64), (1, 17, 9)])
def test_conv_stack_restores_any_image_size(shape):
    encoder, decoder = ConvEncoder(shape, 6, (8, 16, 32)), ConvDecoder(3, shape, (8, 16, 32))
    assert encoder(torch.rand(2, *shape)).shape == (2, 6)
    assert decoder(torch.rand(2, 3)).shape == (2, *shape)


@pytest.mark.parametrize("name", ["vae", "conv_vae"])
def test_checkpoint_round_trip_restores_identical_outputs(name, images, tmp_path):
    model = MODELS[name]()
    trainer = Trainer(default_root_dir=tmp_path, max_steps=3, accelerator="cpu", logger=False,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(model, DataLoader(TensorDataset(images, torch.zeros(4)), batch_size=2))
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    restored = type(model).load_from_checkpoint(tmp_path / "model.ckpt")
    model.eval(), restored.eval()
    assert torch.equal(model.reconstruct(images), restored.reconstruct(images))
    assert torch.equal(model.sample(2, generator=torch.Generator().manual_seed(0)),
                       restored.sample(2, generator=torch.Generator().manual_seed(0)))


def test_checkpoint_records_exactly_the_preset_arguments(tmp_path):
    model = ConvVAE(image_shape=SHAPE, latent_dim=4, widths=(8, 16))
    assert set(model.hparams) == {"image_shape", "latent_dim", "widths", "batch_norm", "attention_resolutions", "beta",
                                  "free_bits",
                                  "kl_warmup_steps", "kl_cycles", "kl_cycle_ratio", "likelihood", "sigma",
                                  "mixture_components", "lr"}


@pytest.mark.parametrize("kwargs, message", [
    ({"latent_dim": 0}, "latent_dim=0"),
    ({"widths": ()}, "widths=()"),
    ({"widths": (8, -1)}, "widths=(8, -1)"),
    ({"likelihood": "poisson"}, "likelihood='poisson'"),
    ({"lr": -1.0}, "lr=-1.0"),
])
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ConvVAE(**{"image_shape": SHAPE, **kwargs})


def test_wrong_image_shape_is_caught_before_training():
    with pytest.raises(ValueError, match=r"built for images of shape \(1, 16, 12\).*\(2, 3, 32, 32\)"):
        MODELS["conv_vae"]().loss(torch.rand(2, 3, 32, 32))


def test_a_short_fit_lowers_the_loss():
    data = torch.rand(1, *SHAPE).round().repeat(64, 1, 1, 1)  # one binary pattern: easy to learn
    model = MODELS["vae"]()
    before = model.loss(data)["loss"].item()
    trainer = Trainer(max_steps=60, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(model, DataLoader(TensorDataset(data, torch.zeros(64)), batch_size=16))
    assert model.loss(data)["loss"].item() < 0.5 * before


def test_likelihood_applies_to_vaes_only_and_weights_have_k_rows(images):
    vae, ae = MODELS["vae"](), MODELS["ae"]()
    assert vae.has_likelihood and not ae.has_likelihood
    assert vae.log_importance_weights(images, num_samples=5).shape == (5, len(images))
    with pytest.raises(TypeError, match="no density"):
        ae.log_importance_weights(images)
