"""The ELBO-gap study: exact identities of the 1-D toy VAE, checked by quadrature, and the figure is written."""

import pytest
import torch

from genlab.analysis import (DECODER_PARAMETERS, ENCODER_PARAMETERS, ToyVAE, elbo_exact, elbo_samples, log_marginal,
                             main, posterior_kl, sweep, toy_data, train)


@pytest.fixture(scope="module")
def trained() -> tuple[ToyVAE, torch.Tensor]:
    torch.manual_seed(0)
    x = toy_data(num_points=64)
    return train(ToyVAE(), x, steps=300, lr=0.05), x


def moved(model: ToyVAE, name: str, offset: float) -> ToyVAE:
    copy = ToyVAE(model.sigma)
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        getattr(copy, name).add_(offset)
    return copy


@pytest.mark.parametrize("name", [*DECODER_PARAMETERS, *ENCODER_PARAMETERS, "dec_bias"])
def test_elbo_plus_posterior_kl_is_log_px_and_never_above_it(trained, name):
    model, x = trained
    for offset in (-1.0, -0.2, 0.0, 0.3, 1.0):
        variant = moved(model, name, offset)
        log_px, elbo, kl = log_marginal(variant, x), elbo_exact(variant, x), posterior_kl(variant, x)
        assert (elbo <= log_px + 1e-9).all() and (kl >= -1e-9).all()  # every data point, every parameter value
        assert torch.allclose(elbo + kl, log_px, atol=1e-6)


def test_training_leaves_a_real_gap_that_the_monte_carlo_elbo_sees(trained):
    model, x = trained
    with torch.no_grad():
        gap = (log_marginal(model, x) - elbo_exact(model, x)).mean()
        draws = elbo_samples(model, x, 2000, torch.Generator().manual_seed(0))
        exact = elbo_exact(model, x)
    assert 0.01 < gap < 2.0  # the Gaussian q cannot match the posterior of a sigmoid decoder exactly
    assert abs(draws.mean() - exact.mean()) < 0.02 and torch.allclose(draws.mean(dim=0), exact, atol=0.2)


def test_moving_the_encoder_never_changes_log_px(trained):
    model, x = trained
    offsets = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
    before = {n: p.clone() for n, p in model.named_parameters()}
    for name in ENCODER_PARAMETERS:
        result = sweep(model, x, name, offsets, num_draws=20)
        assert torch.equal(result["log_px"], result["log_px"][:1].expand(5))
        assert (result["elbo_exact"] <= result["log_px"]).all() and result["elbo_exact"].argmax() == 2
    theta = sweep(model, x, "dec_weight", offsets, num_draws=20)
    assert theta["log_px"].unique().numel() == 5  # the decoder moves log p(x) too
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # sweeps restore the parameters


def test_cli_writes_the_figure(tmp_path):
    path = main(["--out", str(tmp_path), "--steps", "50", "--points", "5"])
    assert path == tmp_path / "elbo_gap.png" and path.stat().st_size > 10_000
