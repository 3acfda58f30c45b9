"""AE, VAE, ConvAE and ConvVAE: the model contract (genlab.testing) once per model, then what is specific to them:
closed-form KL and likelihoods, beta, conv sizes, argument errors, importance weights."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from genlab.models import AE, VAE, ConvAE, ConvVAE
from genlab.models.blocks import ConvDecoder, ConvEncoder
from genlab.models.losses import bernoulli_nll, gaussian_nll
from genlab.testing import AutoencoderContract

SHAPE = (1, 16, 12)  # non-square on purpose: Frey faces are 28x20
KL_SETTINGS = {"beta", "free_bits", "kl_warmup_steps", "kl_cycles", "kl_cycle_ratio", "tc_weight"}
LIKELIHOOD = {"likelihood", "sigma", "mixture_components", "lr"}
PRIOR = {"prior", "prior_layers"}
GAUSSIAN_FLOOR = 0.5 * math.prod(SHAPE) * math.log(2 * math.pi)  # the unlearnable constant of a sigma=1 Gaussian


# --- the contract, once per model ---
class TestAE(AutoencoderContract):
    terms, term_weights, stochastic = {"recon"}, {}, False

    def make_model(self):
        return AE(image_shape=SHAPE, latent_dim=4, hidden=(32,))


class TestVAE(AutoencoderContract):
    terms, term_weights = {"recon", "kl"}, {"kl": 1.0}
    fit_steps, fit_improvement = 60, 0.5  # the loss halves in 60 steps

    def make_model(self):
        return VAE(image_shape=SHAPE, latent_dim=4, hidden=(32,))


class TestConvAE(AutoencoderContract):
    terms, term_weights, stochastic = {"recon"}, {}, False
    fit_improvement = 0.1  # a conv net learns one pattern slower at lr 1e-3: 16% of the loss in 40 steps

    def make_model(self):
        return ConvAE(image_shape=SHAPE, latent_dim=4, widths=(8, 16))


class TestConvVAE(AutoencoderContract):
    terms, term_weights = {"recon", "kl"}, {"kl": 1.0}
    hparams = {"image_shape", "latent_dim", "widths", "batch_norm", "attention_resolutions", "architecture",
               *KL_SETTINGS, *PRIOR, *LIKELIHOOD}

    def make_model(self):
        return ConvVAE(image_shape=SHAPE, latent_dim=4, widths=(8, 16), batch_norm=True)


class TestConvVAEGaussian(AutoencoderContract):
    terms, term_weights, loss_floor = {"recon", "kl"}, {"kl": 1.0}, GAUSSIAN_FLOOR
    skip = {"fit": "sigma=1 Gaussian gradients are small: 40 steps move the loss by under 10% of its learnable "
                   "part (TestConvVAE checks the fit with the Bernoulli likelihood)"}

    def make_model(self):
        return ConvVAE(image_shape=SHAPE, latent_dim=4, widths=(8, 16), likelihood="gaussian")


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, *SHAPE)


# --- specific to these models ---
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
        TestConvVAE().make_model().loss(torch.rand(2, 3, 32, 32))


def test_likelihood_applies_to_vaes_only_and_weights_have_k_rows(images):
    vae, ae = TestVAE().make_model(), TestAE().make_model()
    assert vae.has_likelihood and not ae.has_likelihood
    assert vae.log_importance_weights(images, num_samples=5).shape == (5, len(images))
    with pytest.raises(TypeError, match="no density"):
        ae.log_importance_weights(images)
