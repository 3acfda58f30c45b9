"""HierarchicalVAE: the model contract, the per-group KL, update skipping, the EMA, and the IWAE estimate against the
closed-form log p(x) of a linear-Gaussian two-group hierarchy."""

import json
import math

import pytest
import torch
from lightning import Callback, Trainer
from torch.utils.data import DataLoader, TensorDataset

from genlab.cli import main
from genlab.metrics.likelihood import importance_weighted_log_likelihood
from genlab.models import hierarchical, ladder
from genlab.models.hierarchical import HierarchicalVAE
from genlab.models.ladder import STD_OFFSET, Residual
from genlab.models.protocols import KLPerDimension, LatentModel, LikelihoodModel, Sampler
from genlab.testing import ModelContract

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
TINY = dict(image_shape=(1, 8, 8), resolutions=(2, 4, 4), latent_channels=2, width=8)


def binary(n: int = 6, shape: tuple[int, ...] = (1, 8, 8)) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, *shape), 0.3))


def fit(model: HierarchicalVAE, steps: int, callbacks: list[Callback] = (), x: torch.Tensor | None = None) -> Trainer:
    x = binary(32) if x is None else x
    loader = DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=8, shuffle=True)
    trainer = Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))
    trainer.fit(model, loader)
    return trainer


class TestHierarchicalVAE(ModelContract):
    protocols = (LatentModel, Sampler, LikelihoodModel, KLPerDimension)
    terms = {"recon", "kl", "kl_0", "kl_1", "kl_2"}
    reached_modules = ("net.stem", "net.up_cells")  # the bottom-up pass, through every group's posterior
    stochastic, temperature_spreads = True, True
    hparams = {"image_shape", "resolutions", "latent_channels", "width", "cells", "likelihood", "sigma",
               "mixture_components", "beta", "free_bits", "kl_warmup_steps", "lr", "grad_clip", "skip_factor",
               "ema_rate"}

    def make_model(self):
        return HierarchicalVAE(**TINY, lr=3e-3, ema_rate=0.5)  # eval mode reads the EMA: a short one follows the fit


def test_shapes_per_group_temperatures_and_the_untrained_ema():
    model, x = HierarchicalVAE(**TINY), binary()
    model.loss(x)["loss"].backward()
    assert all(p.grad is None for p in model.ema.parameters())  # the EMA is not trained
    model.eval()
    assert model.latent_dim == 2 * 2 * 2 and model.encode(x).shape == (6, 8)
    images = model.sample(5, temperature=[1.0, 0.5, 0.0])
    assert images.shape == (5, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert model.log_importance_weights(x, num_samples=3).shape == (3, 6) and model.kl_per_dim(x).shape == (8,)


def test_group_kls_sum_to_kl_and_free_bits_floor_each_group():
    model, x = HierarchicalVAE(**TINY), binary()
    terms = model.loss(x)
    assert torch.allclose(terms["kl_0"] + terms["kl_1"] + terms["kl_2"], terms["kl"], rtol=1e-6)
    assert terms["kl_1"] > 0 and terms["kl_2"] > 0
    floored = HierarchicalVAE(**TINY, free_bits=100.0)  # every group under its floor: the KL is the floors' sum
    floored.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    terms = floored.loss(x)
    assert torch.allclose(terms["loss"], terms["recon"] + 100.0 * (8 + 32 + 32))


def test_temperature_zero_is_deterministic_and_bad_temperatures_are_refused():
    model = HierarchicalVAE(**TINY).eval()
    first = model.sample(2, generator=torch.Generator().manual_seed(0), temperature=0.0)
    assert torch.equal(first, model.sample(2, generator=torch.Generator().manual_seed(1), temperature=[0, 0, 0]))
    with pytest.raises(ValueError, match="one per group"):
        model.sample(2, temperature=[1.0, 1.0])


@pytest.mark.parametrize("bad, match", [(dict(resolutions=[3]), "resolutions"), (dict(resolutions=[4, 2]), "coarsest"),
                                        (dict(ema_rate=1.0), "ema_rate"), (dict(free_bits=-1.0), "free_bits"),
                                        (dict(likelihood="poisson"), "likelihood"), (dict(width=0), "width")])
def test_bad_arguments_raise_one_line(bad, match):
    with pytest.raises(ValueError, match=match) as error:
        HierarchicalVAE(**{**TINY, **bad})
    assert "\n" not in str(error.value)


def test_wrong_image_shape_is_refused():
    with pytest.raises(ValueError, match="shape"):
        HierarchicalVAE(**TINY).loss(binary(2, (1, 16, 16)))


class Spike(Callback):
    """Multiplies the gradients by 1e4 before optimiser step `at` and records the weights around it."""

    def __init__(self, at: int) -> None:
        self.at, self.before, self.after = at, None, None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == self.at:
            self.before = [p.detach().clone() for p in pl_module.parameters()]
            for p in pl_module.parameters():
                if p.grad is not None:
                    p.grad.mul_(1e4)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.before is not None and self.after is None:
            self.after = [p.detach().clone() for p in pl_module.parameters()]


def test_a_gradient_spike_skips_the_update(monkeypatch):
    monkeypatch.setattr(hierarchical, "SPIKE_WARMUP", 3)
    model, spike = HierarchicalVAE(**TINY), Spike(at=5)
    fit(model, 8, [spike])
    assert int(model.skipped_updates) == 1
    assert all(torch.equal(b, a) for b, a in zip(spike.before, spike.after))  # neither weights nor EMA moved
    assert 0 < float(model.grad_norm_mean) < 1e4


def test_ema_is_used_in_eval_mode_and_survives_the_checkpoint(tmp_path):
    model, x = HierarchicalVAE(**TINY, ema_rate=0.9), binary()
    trainer = fit(model, 6)
    net, ema = torch.nn.utils.parameters_to_vector(model.net.parameters()), \
        torch.nn.utils.parameters_to_vector(model.ema.parameters())
    assert not torch.allclose(net, ema)
    model.eval()
    expected = model.reconstruct(x)
    model.net.load_state_dict(model.ema.state_dict())  # eval outputs come from the EMA: copying it changes nothing
    assert torch.equal(model.reconstruct(x), expected)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    loaded = HierarchicalVAE.load_from_checkpoint(tmp_path / "model.ckpt").eval()
    assert torch.equal(loaded.reconstruct(x), expected)
    assert torch.equal(torch.nn.utils.parameters_to_vector(loaded.ema.parameters()), ema)
    assert dict(loaded.hparams) == dict(model.hparams)


def linear_gaussian(sigma: float = 0.3) -> HierarchicalVAE:
    """A 2x2 one-channel model whose every residual cell is the identity and whose priors and posteriors are
    constants: z_0 ~ N(0, 1) (1 dim), z_1 ~ N(0.25, 0.8^2) (2x2 dims), x = c + A z_0 + B z_1 + N(0, sigma^2) per
    pixel (the top-down path is linear), discretised to 8 bits. q(z_0) = N(0.3, 1.2^2), q(z_1) = N(-0.2, 1.3^2)."""
    model = HierarchicalVAE(image_shape=(1, 2, 2), resolutions=(1, 2), latent_channels=1, width=4,
                            likelihood="discretized_gaussian", ema_rate=0.0)
    raw = lambda std: math.log(math.expm1(std)) - STD_OFFSET  # noqa: E731
    net, draws = model.net, torch.Generator().manual_seed(0)  # loadings that do not depend on the init's draws
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, Residual):
                module.body[-1].weight.zero_(), module.body[-1].bias.zero_()
        for group, (mean, std) in zip(net.groups, [(0.3, 1.2), (-0.2, 1.3)]):
            group.posterior[-1].weight.zero_()
            group.posterior[-1].bias.copy_(torch.tensor([mean, raw(std)]))
            group.project.weight.copy_(0.5 * torch.randn(group.project.weight.shape, generator=draws))
        net.groups[1].prior[-1].bias[:2] = torch.tensor([0.25, raw(0.8)])
        net.head.weight.copy_(0.1 * torch.randn(net.head.weight.shape, generator=draws))
        net.head.weight[1], net.head.bias[0], net.head.bias[1] = 0.0, 0.5, math.log(sigma)
    model.ema.load_state_dict(net.state_dict())
    return model.eval()


def test_iwae_over_all_groups_matches_the_closed_form_of_a_linear_gaussian_hierarchy():
    model, sigma = linear_gaussian(), 0.3

    def top_down(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        return model.net.top_down(None, len(z0), lambda i, q, p: (z0, z1)[i])[0][:, 0].flatten(1)

    basis = torch.eye(5)
    with torch.no_grad():
        c = top_down(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 2, 2))
        loadings = top_down(basis[:, :1].reshape(5, 1, 1, 1), basis[:, 1:].reshape(5, 1, 2, 2)) - c  # (5, 4)
        z = torch.randn(3, 5)
        assert torch.allclose(top_down(z[:, :1].reshape(3, 1, 1, 1), z[:, 1:].reshape(3, 1, 2, 2)),
                              c + z @ loadings, atol=1e-5)  # the decoder mean is affine in (z_0, z_1)
    assert loadings.abs().max() > 0.2
    prior_mean, prior_cov = torch.tensor([0.0, 0.25, 0.25, 0.25, 0.25]), torch.diag(torch.tensor([1.0] + [0.64] * 4))
    mean = c[0] + prior_mean @ loadings
    cov = loadings.T @ prior_cov @ loadings + sigma ** 2 * torch.eye(4)
    x = torch.tensor([100.0, 140.0, 120.0, 150.0]) / 255
    # each 8-bit bin holds density * 1/255 (to ~1e-5 relative for sigma = 0.3, far from the end bins)
    exact = torch.distributions.MultivariateNormal(mean.double(), cov.double()).log_prob(x.double()) - 4 * math.log(255)
    log_px, elbo = importance_weighted_log_likelihood(model, x.reshape(1, 1, 2, 2), num_samples=20000,
                                                      chunk_size=5000, generator=torch.Generator().manual_seed(0))
    assert abs(log_px.item() - exact.item()) < 0.03, (log_px.item(), exact.item())
    assert elbo.item() < exact.item() - 0.1  # q is not the posterior: the one-sample bound is visibly looser


def test_cli_fit_writes_last_checkpoint_and_test_reports_iwae(tmp_path):
    common = ["--model=genlab.models.hierarchical.HierarchicalVAE", "--model.resolutions=[2, 4]",
              "--model.width=8", "--model.latent_channels=2", "--model.likelihood=discretized_gaussian",
              "--data=FakeImages", "--data.image_shape=[1, 8, 8]",
              "--data.size=32", "--data.batch_size=8", f"--trainer.default_root_dir={tmp_path}", *QUIET]
    main(["fit", *common, "--trainer.max_epochs=1"])
    last = list(tmp_path.rglob("last.ckpt"))
    assert len(last) == 1 and "ema.head.weight" in torch.load(last[0], weights_only=True)["state_dict"]
    cli = main(["test", f"--ckpt_path={last[0]}", *common,
                "--metrics.num_importance_samples=4", "--metrics.num_fid_samples=0"])
    assert torch.isfinite(cli.trainer.callback_metrics["test/neg_elbo"])
    metrics = json.loads((last[0].parent.parent / "test_metrics.json").read_text())
    assert metrics["iwae_nll"] <= metrics["neg_elbo"] + 1e-4 and metrics["protocol"]["importance_samples"] == 4


def test_short_run_on_binarised_mnist_lowers_the_loss(mnist_root):
    from genlab.datamodules import MNIST
    data = MNIST(root=mnist_root, binarize=True, batch_size=64)
    data.setup("fit")
    x = next(iter(data.val_dataloader()))[0][:256]
    model = HierarchicalVAE(width=16, latent_channels=4)
    before = model.eval().loss(x)["loss"].item()
    fit(model.train(), 60, x=x)
    after = model.eval().loss(x)["loss"].item()
    assert after < before - 100, (before, after)


def test_no_cell_runs_finer_than_the_finest_group_and_point_convs_match_conv2d():
    model = HierarchicalVAE(image_shape=(1, 28, 28), resolutions=(1, 7), latent_channels=2, width=8)
    assert model.net.patch == 4 and [size for size in model.net.sizes] == [(7, 7), (4, 4), (2, 2), (1, 1)]
    model.loss(binary(3, (1, 28, 28)))["loss"].backward()
    assert model.eval().sample(2).shape == (2, 1, 28, 28) and model.log_importance_weights(
        binary(3, (1, 28, 28)), num_samples=2).shape == (2, 3)
    dense = HierarchicalVAE(image_shape=(1, 28, 28), resolutions=(1, 1), latent_channels=2, width=8)
    assert dense.net.patch == 28 and dense.net.stem.weight.shape == (8, 784, 1, 1)
    assert dense.net.head.weight.shape == (784, 8, 1, 1)  # Bernoulli logits of every pixel from one 1x1 map
    conv, x = ladder.Conv(6, 5, 1), torch.randn(4, 6, 1, 1)
    assert torch.allclose(conv(x), torch.nn.functional.conv2d(x, conv.weight, conv.bias), atol=1e-6)
    odd = HierarchicalVAE(image_shape=(1, 10, 10), resolutions=(3,), latent_channels=2, width=8)  # 3 does not tile 10
    assert odd.net.patch == 1 and odd.net.sizes[0] == (10, 10) and odd.loss(binary(2, (1, 10, 10)))["loss"].isfinite()


def test_update_ema_and_clipping_work_without_a_trainer(monkeypatch):
    model = HierarchicalVAE(**TINY, ema_rate=0.999, grad_clip=1.0)
    before = [p.clone() for p in model.ema.parameters()]
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(1.0)
    model.update_ema(step=0)  # decay min(0.999, 1/10): the EMA moves 90 % of the way
    for average, old, new in zip(model.ema.parameters(), before, model.net.parameters()):
        assert torch.allclose(average, 0.1 * old + 0.9 * new, atol=1e-6)
    monkeypatch.setattr(hierarchical, "SPIKE_WARMUP", 1)
    model = HierarchicalVAE(**TINY, grad_clip=1.0)
    model.loss(binary())["loss"].backward()
    norm, skip = model.clip_gradients_or_skip(step=0)
    clipped = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    assert not skip and norm > 1.0 and torch.isclose(clipped, torch.tensor(1.0), atol=1e-4)
    for p in model.parameters():
        if p.grad is not None:
            p.grad.mul_(1e6)
    assert model.clip_gradients_or_skip(step=1)[1] and int(model.skipped_updates) == 1


def test_clipping_under_the_limit_leaves_the_gradients_alone():
    model = HierarchicalVAE(**TINY, grad_clip=1e9)
    model.loss(binary())["loss"].backward()
    before = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    norm, skip = model.clip_gradients_or_skip(step=0)
    assert not skip and 0 < norm < 1e9
    assert all(torch.equal(b, p.grad) for b, p in zip(before, (p for p in model.parameters() if p.grad is not None)))
