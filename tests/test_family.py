"""Contract tests for DenoisingAE, CVAE, BaselineNN, FlowVAE and KL control: every preset gets them by being listed
once in MODELS. Model-specific behaviour (conditions, denoising, PPCA, real MNIST) is in test_family_variants.py."""

import math

import pytest
import torch
from lightning import Trainer
from torch.utils.data import DataLoader, TensorDataset

from genlab.models import AE, VAE
from genlab.models.losses import free_bits_kl, kl_annealing
from genlab.models.presets import CVAE, BaselineNN, DenoisingAE, FlowVAE

SHAPE = (1, 16, 12)
TINY = dict(image_shape=SHAPE, latent_dim=4, hidden=(32,))
MODELS = {
    "denoising_ae": lambda: DenoisingAE(image_shape=SHAPE, widths=(8, 16)),
    "cvae_label": lambda: CVAE(**TINY, num_classes=10),
    "cvae_quarter": lambda: CVAE(**TINY, condition="quarter"),
    "cvae_none": lambda: CVAE(**TINY, condition="none"),
    "baseline_nn": lambda: BaselineNN(image_shape=SHAPE, hidden=(32,)),
    "flow_vae_planar": lambda: FlowVAE(**TINY),
    "flow_vae_iaf": lambda: FlowVAE(**TINY, flow="iaf", num_flows=2),
    "vae_free_bits": lambda: VAE(**TINY, free_bits=0.5, kl_warmup_steps=100, kl_cycles=2, kl_cycle_ratio=0.5),
}
TERMS = {"denoising_ae": {"recon"}, "baseline_nn": {"recon"}, "flow_vae_planar": {"recon", "kl", "log_det"},
         "flow_vae_iaf": {"recon", "kl", "log_det"}, "vae_free_bits": {"recon", "kl", "kl_free_bits"}}
TERMS_FLOOR = {"denoising_ae": 0.5 * math.prod(SHAPE) * math.log(2 * math.pi)}  # Gaussian constant: unlearnable
STOCHASTIC = {"cvae_label", "cvae_quarter", "cvae_none", "flow_vae_planar", "flow_vae_iaf", "vae_free_bits"}


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, *SHAPE)


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.tensor([0, 3, 7, 9])


def condition_for(name: str, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """What `y` means for each model: condition images in quarter mode, labels otherwise."""
    return images if name in ("cvae_quarter", "baseline_nn") else labels


def fit(model, data: torch.Tensor, labels: torch.Tensor, steps: int, tmp_path=None, **kwargs) -> Trainer:
    trainer = Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path, **kwargs)
    trainer.fit(model, DataLoader(TensorDataset(data, labels), batch_size=16, shuffle=True))
    return trainer


# --- contract tests over MODELS ---
@pytest.mark.parametrize("name", MODELS)
def test_protocol_shapes_and_range(name, images, labels):
    model, y = MODELS[name]().eval(), condition_for(name, images, labels)
    z = model.encode(images, y)
    assert z.shape == (4, model.latent_dim)
    outputs = (model.decode(z, y), model.reconstruct(images, y), model.reconstruct(images, y, stochastic=True),
               model.sample(3, y=y[:1], generator=torch.Generator().manual_seed(0)))
    for out in outputs:
        assert out.shape[1:] == SHAPE and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("name", MODELS)
def test_loss_terms_are_named_finite_scalars_with_weighted_sum(name, images, labels):
    model = MODELS[name]()
    torch.manual_seed(0)
    terms = model.loss(images, labels)
    assert set(terms) == {"loss"} | TERMS.get(name, {"recon", "kl"})
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    weighted = sum(w * terms[n] for n, w in model.term_weights().items())
    assert torch.allclose(terms["loss"], terms["recon"] + weighted)


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"baseline_nn"}))  # BaselineNN has no encoder to reach
def test_gradients_reach_the_encoder(name, images, labels):
    model = MODELS[name]()
    model.loss(images, labels)["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_stochastic_reconstructions_vary_only_for_stochastic_posteriors(name, images, labels):
    model, y = MODELS[name]().eval(), condition_for(name, images, labels)
    draw = lambda seed: model.reconstruct(images, y, stochastic=True,  # noqa: E731
                                          generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(0), draw(0))
    assert torch.equal(draw(0), draw(1)) == (name not in STOCHASTIC)


@pytest.mark.parametrize("name", MODELS)
def test_a_short_fit_lowers_the_loss(name):
    data = torch.rand(1, *SHAPE).round().repeat(64, 1, 1, 1)  # one binary pattern: easy to learn
    y = torch.zeros(64, dtype=torch.long)
    model = MODELS[name]()
    evaluate = lambda: torch.manual_seed(0) and model.eval().loss(data, y)["loss"].item()  # noqa: E731
    before = evaluate()
    fit(model.train(), data, y, steps=40)
    assert evaluate() < before - 0.2 * (before - TERMS_FLOOR.get(name, 0.0))  # a fifth of the learnable part


@pytest.mark.parametrize("name, keys", [
    ("cvae_quarter", {"image_shape", "latent_dim", "hidden", "condition", "num_classes", "beta", "free_bits",
                      "kl_warmup_steps", "kl_cycles", "kl_cycle_ratio", "likelihood", "sigma",
                      "mixture_components", "lr"}),
    ("flow_vae_iaf", {"image_shape", "latent_dim", "hidden", "flow", "num_flows", "iaf_update", "beta", "free_bits",
                      "kl_warmup_steps", "kl_cycles", "kl_cycle_ratio", "likelihood", "sigma",
                      "mixture_components", "lr"}),
    ("denoising_ae", {"image_shape", "widths", "noise_std", "likelihood", "sigma", "mixture_components", "lr"}),
])
def test_checkpoint_round_trip_restores_identical_outputs(name, keys, images, labels, tmp_path):
    model = MODELS[name]()
    assert set(model.hparams) == keys
    trainer = fit(model, images, labels, steps=2, tmp_path=tmp_path)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    restored = type(model).load_from_checkpoint(tmp_path / "model.ckpt").eval()
    model.eval()
    y = condition_for(name, images, labels)
    assert torch.equal(model.reconstruct(images, y), restored.reconstruct(images, y))


# --- KL control ---
@pytest.mark.parametrize("step, total, cycles, ratio, expected", [
    (0, 0, 1, 1.0, 1.0), (10**6, 0, 1, 1.0, 1.0),  # off
    (0, 100, 1, 1.0, 0.0), (25, 100, 1, 1.0, 0.25), (99, 100, 1, 1.0, 0.99), (100, 100, 1, 1.0, 1.0),  # warm-up
    (0, 100, 4, 0.5, 0.0), (5, 100, 4, 0.5, 0.4), (12, 100, 4, 0.5, 0.96), (13, 100, 4, 0.5, 1.0),  # Fu et al.
    (24, 100, 4, 0.5, 1.0), (25, 100, 4, 0.5, 0.0), (30, 100, 4, 0.5, 0.4), (99, 100, 4, 0.5, 1.0),
    (400, 100, 4, 0.5, 1.0),
])
def test_kl_annealing_matches_the_formula(step, total, cycles, ratio, expected):
    assert kl_annealing(step, total, cycles, ratio) == pytest.approx(expected)


def test_free_bits_never_lets_a_dimension_under_the_floor():
    kl = torch.rand(32, 6) * torch.tensor([0.01, 0.1, 0.4, 0.6, 2.0, 5.0])
    per_dim = kl.mean(0)
    assert torch.allclose(free_bits_kl(kl, 0.5), per_dim.clamp(min=0.5).sum())
    assert free_bits_kl(kl, 0.5) >= 6 * 0.5


def test_free_bits_objective_floors_dims_and_reports_the_true_kl(images):
    model = VAE(**TINY, free_bits=0.5)
    h = model.encoder(images).detach().requires_grad_()
    _, terms = model.bottleneck(h)
    per_dim = model.bottleneck.kl_per_dim(h)
    assert torch.allclose(terms["kl"], per_dim.sum()) and model.term_weights() == {"kl_free_bits": 1.0}
    assert torch.allclose(terms["kl_free_bits"], per_dim.clamp(min=0.5).sum())
    terms["kl_free_bits"].backward()
    mean_grad = h.grad[:, :4].abs().sum(0)
    assert torch.equal(mean_grad == 0, per_dim < 0.5)  # dims under the floor get no gradient from the KL


def test_kl_weight_is_logged_and_resumes_with_global_step(tmp_path):
    data, y = torch.rand(64, *SHAPE), torch.zeros(64, dtype=torch.long)
    model = VAE(**TINY, beta=2.0, kl_warmup_steps=10)
    trainer = fit(model, data, y, steps=3, tmp_path=tmp_path)
    assert trainer.callback_metrics["train/kl_weight"].item() == pytest.approx(2.0 * 2 / 10)  # logged at step 2
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    resumed = VAE(**TINY, beta=2.0, kl_warmup_steps=10)
    trainer = Trainer(max_steps=6, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(resumed, DataLoader(TensorDataset(data, y), batch_size=16), ckpt_path=tmp_path / "half.ckpt")
    assert trainer.callback_metrics["train/kl_weight"].item() == pytest.approx(2.0 * 5 / 10)
    assert resumed.eval().term_weights() == {"kl": 2.0}  # evaluation uses the schedule's end value


def test_kl_per_dim_orders_dimensions_and_is_missing_without_kl(images):
    model = VAE(**TINY)
    assert model.kl_per_dim(images).shape == (4,) and (model.kl_per_dim(images) >= 0).all()
    assert MODELS["flow_vae_planar"]().kl_per_dim(images).shape == (4,)
    with pytest.raises(TypeError, match="no KL"):
        AE(image_shape=SHAPE, latent_dim=4, hidden=(32,)).kl_per_dim(images)


# --- the CLI builds them ---
@pytest.mark.parametrize("model, expected", [
    (["--model=genlab.models.ppca.PPCA", "--model.latent_dim=3"], {"latent_dim": 3}),
    (["--model=genlab.models.presets.CVAE", "--model.hidden=[16]", "--model.latent_dim=2"], {"num_classes": 10}),
])
def test_cli_fit_links_shape_and_classes_and_writes_a_checkpoint(model, expected, tmp_path):
    from genlab.cli import main  # full import paths: the short names need genlab.models.__all__

    cli = main(["fit", *model, "--data=FakeImages", "--data.image_shape=[1, 16, 12]", "--data.size=32",
                "--data.batch_size=8", "--trainer.max_epochs=2", "--trainer.accelerator=cpu",
                "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                f"--trainer.default_root_dir={tmp_path}"])
    assert cli.model.image_shape == SHAPE and all(cli.model.hparams[k] == v for k, v in expected.items())
    assert any(p.name == "last.ckpt" for p in tmp_path.rglob("*.ckpt"))
