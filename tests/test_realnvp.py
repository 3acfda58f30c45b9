"""RealNVP: the model contract, couplings invert and their log-dets are autograd's, the image flow's bits/dim is a
true 8-bit bound, and the vector prior is a normalised density."""

import json
import math

import pytest
import torch
from scipy.integrate import quad
from torch.autograd.functional import jacobian

from genlab.cli import main
from genlab.models.protocols import ExactLikelihood, Sampler
from genlab.models.realnvp import (MultiScaleFlow, RealNVP, RealNVPPrior, checkerboard_mask,
                                   channel_mask, image_coupling)
from genlab.testing import ModelContract

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
TINY = dict(image_shape=(1, 8, 8), num_scales=2, hidden=8, num_blocks=1)


class TestRealNVP(ModelContract):
    protocols, temperature_spreads = (Sampler, ExactLikelihood), True
    terms, logged = {"nll", "bpd"}, {"train/loss", "train/bpd", "val/nll", "val/bpd"}

    def make_model(self):
        return RealNVP(**TINY)


def randomized(module: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """`module` with every parameter redrawn: zero-initialised coupling nets would make every test trivial."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, std)
    return module


def log_abs_det_by_autograd(f, x: torch.Tensor) -> torch.Tensor:
    """log |det df/dx| of one input x (any shape) from the full Jacobian, float64."""
    matrix = jacobian(lambda v: f(v.reshape(x.shape)).flatten(), x.flatten())
    return torch.linalg.slogdet(matrix)[1]


COUPLINGS = {
    "checkerboard": lambda: image_coupling((2, 4, 4), "checkerboard", 1, hidden=8, num_blocks=1),
    "channel": lambda: image_coupling((4, 2, 2), "channel", 0, hidden=8, num_blocks=1),
    "vector": lambda: RealNVPPrior(5, num_layers=3, hidden=8),
}
SHAPES = {"checkerboard": (2, 4, 4), "channel": (4, 2, 2), "vector": (5,)}


@pytest.mark.parametrize("name", COUPLINGS)
def test_couplings_invert(name):
    layer = randomized(COUPLINGS[name]())
    x = torch.randn(6, *SHAPES[name])
    z, _ = layer(x)
    assert not torch.allclose(z, x)
    torch.testing.assert_close(layer.inverse(z), x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", COUPLINGS)
def test_coupling_log_det_is_autograds(name):
    layer = randomized(COUPLINGS[name]()).double()
    x = torch.randn(1, *SHAPES[name], dtype=torch.float64)
    _, log_det = layer(x)
    expected = log_abs_det_by_autograd(lambda v: layer(v)[0], x)
    torch.testing.assert_close(log_det[0], expected, rtol=1e-9, atol=1e-9)
    assert abs(expected) > 1e-3  # the randomised layer is not volume preserving: the test compares something


def test_masks_pass_through_half_and_alternate():
    board = checkerboard_mask((2, 4, 4), 0)
    assert board.sum() == 16 and board[0, 0, 0] == 1 and board[0, 0, 1] == 0 and torch.equal(board[0], board[1])
    assert torch.equal(checkerboard_mask((2, 4, 4), 1), 1 - board)
    assert channel_mask((4, 2, 2), 0)[:, 0, 0].tolist() == [1, 1, 0, 0]
    layer = randomized(image_coupling((2, 4, 4), "checkerboard", 0, hidden=8, num_blocks=1))
    x = torch.randn(3, 2, 4, 4)
    assert torch.equal(layer(x)[0] * board, x * board)  # the masked half is copied exactly


def test_multiscale_flow_inverts_and_its_log_det_is_autograds():
    flow = randomized(MultiScaleFlow((1, 4, 4), num_scales=2, hidden=4, num_blocks=1), std=0.1).double()
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    z, log_det = flow(x)
    assert z.shape == (3, 16)
    torch.testing.assert_close(flow.inverse(z), x, rtol=0, atol=1e-10)
    torch.testing.assert_close(log_det[0], log_abs_det_by_autograd(lambda v: flow(v)[0], x[:1]))


def test_three_scales_invert():
    flow = randomized(MultiScaleFlow((3, 8, 8), num_scales=3, hidden=4, num_blocks=1), std=0.05)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(flow.inverse(flow(x)[0]), x, rtol=0, atol=1e-5)


def test_log_likelihood_includes_the_logit_jacobian():
    """log p(x) = log N(f(l(x))) + log|det d f(l(x)) / dx|: the whole data -> noise map against autograd."""
    model = randomized(RealNVP(image_shape=(1, 4, 4), hidden=4, num_blocks=1), std=0.1).double()
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    z = model.flow(model.to_logit(x)[0])[0]
    expected = -0.5 * (z.pow(2).sum() + 16 * math.log(2 * math.pi)) + \
        log_abs_det_by_autograd(lambda v: model.flow(model.to_logit(v)[0])[0], x)
    torch.testing.assert_close(model.log_likelihood(x)[0], expected, rtol=1e-6, atol=1e-6)  # N(z) is float32


def test_bits_per_dim_at_initialisation_on_uniform_8bit_noise_matches_closed_form():
    """At init the flow is the identity, so p is the logit transform's density, iid over dimensions; uniform 8-bit
    data dequantise to x' ~ U[0, 1), hence bpd = (integral_0^1 -log p(x) dx + log 256) / log 2."""
    alpha = 0.05

    def neg_log_density(x: float) -> float:
        y = alpha + (1 - 2 * alpha) * x
        logit = math.log(y / (1 - y))
        return 0.5 * (logit ** 2 + math.log(2 * math.pi)) - math.log(1 - 2 * alpha) + math.log(y * (1 - y))

    expected = (quad(neg_log_density, 0, 1)[0] + math.log(256)) / math.log(2)
    model = RealNVP(**TINY, alpha=alpha)
    x = torch.randint(0, 256, (256, 1, 8, 8)).float() / 255
    with torch.no_grad():
        terms = model.loss(x)
    assert abs(terms["bpd"].item() - expected) < 0.03  # Monte Carlo over 16384 dimensions: standard error ~0.01
    torch.testing.assert_close(terms["nll"], terms["bpd"] * 64 * math.log(2))
    assert terms["loss"] is terms["nll"]


def test_a_short_fit_lowers_bits_per_dim():
    model = RealNVP(**TINY)
    x = (torch.rand(16, 1, 8, 8) < torch.linspace(0.1, 0.9, 8)).float()  # structured: columns of rising density
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    bpds = []
    for _ in range(30):
        terms = model.loss(x)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        bpds.append(terms["bpd"].item())
    assert all(math.isfinite(b) for b in bpds)
    assert sum(bpds[-5:]) / 5 < sum(bpds[:5]) / 5 - 0.5


def test_samples_have_the_data_shape_and_range_and_follow_the_generator():
    model = randomized(RealNVP(**TINY), std=0.05)
    first = model.sample(5, generator=torch.Generator().manual_seed(1))
    again = model.sample(5, generator=torch.Generator().manual_seed(1))
    assert first.shape == (5, 1, 8, 8) and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, again)
    cold = model.sample(5, generator=torch.Generator().manual_seed(1), temperature=0.0)
    assert torch.allclose(cold, cold[:1].expand_as(cold))  # z = 0 for every draw


def test_bad_settings_and_batches_are_refused():
    with pytest.raises(ValueError, match="divisible by 2"):
        RealNVP(image_shape=(1, 6, 6), num_scales=3)
    with pytest.raises(ValueError, match="alpha=0.5"):
        RealNVP(alpha=0.5)
    with pytest.raises(ValueError, match="latent_dim >= 2"):
        RealNVPPrior(1)
    with pytest.raises(ValueError, match="shape"):
        RealNVP(**TINY).loss(torch.rand(2, 1, 4, 4))


def test_prior_is_standard_normal_at_init_and_a_normalised_density_after():
    prior = RealNVPPrior(2, num_layers=4, hidden=16)
    z = torch.randn(7, 2)
    torch.testing.assert_close(prior.log_prob(z), torch.distributions.Normal(0, 1).log_prob(z).sum(-1))
    randomized(prior, std=0.3).double()
    grid = torch.linspace(-12, 12, 801, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        mass = prior.log_prob(points).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(mass.item() - 1) < 1e-3
    assert abs(prior.log_prob(points).exp().max() - 1 / (2 * math.pi)) > 1e-3  # no longer the standard normal


def test_prior_samples_follow_the_generator_and_invert():
    prior = randomized(RealNVPPrior(6, num_layers=4, hidden=16), std=0.2)
    draws = prior.sample(4, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (4, 6) and torch.equal(draws, prior.sample(4, generator=torch.Generator().manual_seed(0)))
    noise = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(prior(draws)[0], noise, rtol=0, atol=1e-5)


def test_cli_fit_then_test_reports_exact_bits_per_dim(tmp_path, capsys):
    common = ["--model=genlab.models.realnvp.RealNVP", "--model.hidden=8", "--model.num_blocks=1",
              "--data=FakeImages", "--data.image_shape=[1, 8, 8]", "--data.size=32", "--data.batch_size=8",
              f"--trainer.default_root_dir={tmp_path}", *QUIET]
    main(["fit", "--trainer.max_epochs=1", *common])
    last = [p for p in tmp_path.rglob("*.ckpt") if p.name == "last.ckpt"]
    assert len(last) == 1
    model = RealNVP.load_from_checkpoint(last[0])
    assert model.image_shape == (1, 8, 8) and model.flow.scales[0][0].net[0].out_channels == 8
    cli = main(["test", "--ckpt_path=last", *common, "--metrics.num_fid_samples=0"])
    metrics = json.loads(next(tmp_path.rglob("test_metrics.json")).read_text())
    assert metrics["protocol"]["likelihood_method"] == "exact" and "dequantization" in metrics["protocol"]
    assert 7.9 < metrics["exact_bpd"] < 9  # uniform 8-bit noise: no model codes it in under 8 bits/dim
    # the evaluator's bound and the model's own test/bpd agree up to their dequantisation noise
    assert abs(metrics["exact_bpd"] - float(cli.trainer.callback_metrics["test/bpd"])) < 0.01


def test_prior_log_prob_takes_importance_sample_shapes():
    prior = randomized(RealNVPPrior(4, num_layers=2, hidden=8), std=0.2)
    z = torch.randn(3, 5, 4)  # (k, B, L): the shape the importance-weighted bound scores
    torch.testing.assert_close(prior.log_prob(z), prior.log_prob(z.reshape(15, 4)).reshape(3, 5))
    assert prior.log_prob(z.bfloat16()).dtype == torch.float32
