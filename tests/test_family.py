"""Tests for DenoisingAE, CVAE, BaselineNN, FlowVAE, KL control and PPCA: every preset gets the contract tests by
being listed once in MODELS. Real-MNIST checks are marked slow."""

import math
import time

import pytest
import torch
from lightning import Trainer
from scipy.linalg import subspace_angles
from torch.distributions import MultivariateNormal
from torch.utils.data import DataLoader, TensorDataset

from genlab.models import AE, VAE
from genlab.models.losses import free_bits_kl, kl_annealing
from genlab.models.ppca import PPCA
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
                      "kl_warmup_steps", "kl_cycles", "kl_cycle_ratio", "likelihood", "sigma", "lr"}),
    ("flow_vae_iaf", {"image_shape", "latent_dim", "hidden", "flow", "num_flows", "beta", "free_bits",
                      "kl_warmup_steps", "kl_cycles", "kl_cycle_ratio", "likelihood", "sigma", "lr"}),
    ("denoising_ae", {"image_shape", "widths", "noise_std", "likelihood", "sigma", "lr"}),
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


# --- CVAE and its baseline ---
def test_cvae_without_condition_is_exactly_a_vae(images):
    torch.manual_seed(3)
    vae = VAE(**TINY).eval()
    torch.manual_seed(3)
    cvae = CVAE(**TINY, condition="none").eval()
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), cvae.state_dict().values()))
    cvae = CVAE(**TINY, condition="none").eval()
    cvae.load_state_dict(vae.state_dict())  # same modules, same names
    assert torch.equal(vae.reconstruct(images), cvae.reconstruct(images))
    assert torch.equal(vae.sample(5, generator=torch.Generator().manual_seed(0)),
                       cvae.sample(5, generator=torch.Generator().manual_seed(0)))
    torch.manual_seed(1)
    expected = vae.loss(images)
    torch.manual_seed(1)
    assert all(torch.equal(expected[k], v) for k, v in cvae.loss(images).items())


def test_cvae_label_changes_the_sample():
    model = MODELS["cvae_label"]().eval()
    draw = lambda label: model.sample(4, y=torch.tensor([label]), generator=torch.Generator().manual_seed(0))  # noqa
    assert not torch.allclose(draw(1), draw(2))
    with pytest.raises(ValueError, match="pass y"):
        model.sample(2)


def test_cvae_quarter_gives_different_completions_of_one_quarter(images):
    model = MODELS["cvae_quarter"]().eval()
    samples = model.sample(6, y=images[:1], generator=torch.Generator().manual_seed(0))
    assert (samples - samples[:1]).abs().flatten(1).amax(1)[1:].min() > 0  # every completion differs
    changed = images[:1].clone()
    changed[:, :, : SHAPE[1] // 2] = 1 - changed[:, :, : SHAPE[1] // 2]  # outside the lower-left quarter
    assert torch.equal(samples, model.sample(6, y=changed, generator=torch.Generator().manual_seed(0)))


def test_baseline_is_deterministic_given_the_condition(images):
    model = MODELS["baseline_nn"]().eval()
    samples = model.sample(3, y=images[:1], generator=torch.Generator().manual_seed(0))
    assert model.latent_dim == 0 and torch.equal(samples[0], samples[2])


@pytest.mark.parametrize("kwargs, message", [
    ({"condition": "left"}, "condition='left'"), ({"condition": "label"}, "num_classes"),
])
def test_bad_conditions_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CVAE(**TINY, **kwargs)


# --- DenoisingAE ---
def test_denoising_ae_fits_the_parameter_budget_on_mnist():
    assert sum(p.numel() for p in DenoisingAE().parameters()) <= 15_000


def test_corruption_is_seeded_clipped_and_only_on_the_input(images):
    model = MODELS["denoising_ae"]()
    noisy = model.corrupt(images, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, model.corrupt(images, torch.Generator().manual_seed(0)))
    assert 0 <= noisy.min() and noisy.max() <= 1 and (noisy - images).abs().mean() > 0.1
    assert torch.equal(MODELS["cvae_none"]().corrupt(images), images)


# --- PPCA ---
def ppca_data(n: int = 20000, dims: int = 10, latent: int = 3, noise_var: float = 0.1):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(dims, latent, generator=generator, dtype=torch.float64)
    mean = torch.randn(dims, generator=generator, dtype=torch.float64)
    z = torch.randn(n, latent, generator=generator, dtype=torch.float64)
    x = z @ weight.T + mean + noise_var**0.5 * torch.randn(n, dims, generator=generator, dtype=torch.float64)
    return x.float().reshape(n, 1, 2, 5), weight, mean


def test_ppca_recovers_a_known_model():
    x, weight, mean = ppca_data()
    model = PPCA(image_shape=(1, 2, 5), latent_dim=3).fit(DataLoader(TensorDataset(x), batch_size=1000))
    assert model.noise_var.item() == pytest.approx(0.1, rel=0.05)
    assert torch.allclose(model.mean.double(), mean, atol=0.05)
    assert subspace_angles(model.weight.double().numpy(), weight.numpy()).max() < 0.05  # radians
    covariance = model.weight.double() @ model.weight.double().T  # W is identified only up to a rotation
    assert torch.allclose(covariance, weight @ weight.T, atol=0.15 * (weight @ weight.T).abs().max().item())


def test_ppca_log_likelihood_matches_the_multivariate_normal():
    x, _, _ = ppca_data(n=2000)
    model = PPCA(image_shape=(1, 2, 5), latent_dim=3).fit([x])
    covariance = model.weight.double() @ model.weight.double().T + model.noise_var.double() * torch.eye(10)
    expected = MultivariateNormal(model.mean.double(), covariance).log_prob(x.flatten(1).double())
    assert torch.allclose(model.log_likelihood(x), expected, atol=1e-8)
    z = model.encode(x)  # posterior mean M^-1 W^T (x - mu)
    m = model.weight.T @ model.weight + model.noise_var * torch.eye(3)
    assert torch.allclose(z, (x.flatten(1) - model.mean) @ model.weight @ torch.linalg.inv(m).T, atol=1e-4)


def test_ppca_fits_in_one_trainer_epoch_and_checkpoints(tmp_path):
    x = torch.rand(256, *SHAPE)
    loader = DataLoader(TensorDataset(x, torch.zeros(256, dtype=torch.long)), batch_size=64)
    model = PPCA(image_shape=SHAPE, latent_dim=4)
    trainer = Trainer(max_epochs=5, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, loader, loader)
    assert trainer.current_epoch == 1  # stopped after the one pass the closed form needs
    direct = PPCA(image_shape=SHAPE, latent_dim=4).fit(loader)
    assert torch.allclose(model.weight.abs(), direct.weight.abs(), atol=1e-5)
    assert trainer.callback_metrics["val/nll"].item() == pytest.approx(-direct.log_likelihood(x).mean().item(),
                                                                       rel=1e-4)
    restored = PPCA.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert torch.equal(restored.reconstruct(x), model.reconstruct(x))
    samples = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, *SHAPE) and 0 <= samples.min() and samples.max() <= 1



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


# --- real MNIST (slow) ---
@pytest.fixture(scope="module")
def mnist(mnist_root) -> dict[str, torch.Tensor]:
    """12k training and 2k validation images with labels, float in [0, 1], from the offline copy."""
    from genlab.datamodules import MNIST

    data = MNIST(root=mnist_root, batch_size=128)
    data.setup("fit")
    out = {}
    for split, n in (("train", 12000), ("val", 2000)):
        dataset = data.dataset(split)
        x, y = zip(*(dataset[i] for i in range(n)))
        out[f"{split}_x"], out[f"{split}_y"] = torch.stack(x), torch.stack([torch.as_tensor(v) for v in y])
    return out


def quick_fit(model, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    start = time.perf_counter()
    Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False).fit(model.train(), DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True))
    return time.perf_counter() - start


@pytest.mark.slow
def test_cvae_quarter_reproduces_its_condition_on_mnist(mnist):
    model = CVAE(latent_dim=8, hidden=(256,), condition="quarter")
    seconds = quick_fit(model, mnist["train_x"], mnist["train_y"], steps=300)
    conditions = mnist["val_x"][:200]
    model.eval()
    samples = torch.stack([model.sample(4, y=c[None], generator=torch.Generator().manual_seed(0)) for c in conditions])
    quarter = model.conditioner.mask((1, 28, 28)).bool()
    region = lambda a, b: (a - b).pow(2)[..., quarter].mean().item()  # noqa: E731
    own = region(samples, conditions[:, None])  # samples vs their own condition
    other = region(samples, conditions.roll(1, 0)[:, None])  # vs another image's quarter
    spread = (samples - samples.mean(1, keepdim=True)).pow(2)[..., ~quarter].mean().item()
    print(f"\nCVAE quarter, 300 steps in {seconds:.1f} s: region MSE {own:.4f} (other image {other:.4f}), "
          f"completion spread outside {spread:.4f}")
    assert own < 0.03 and own < 0.3 * other and spread > 1e-4


@pytest.mark.slow
def test_denoising_ae_denoises_mnist(mnist):
    model = DenoisingAE()
    seconds = quick_fit(model, mnist["train_x"], mnist["train_y"], steps=400)
    model.eval()
    clean = mnist["val_x"]
    noisy = model.corrupt(clean, torch.Generator().manual_seed(0))
    with torch.no_grad():
        denoised = (model.reconstruct(noisy) - clean).pow(2).mean().item()
    noise = (noisy - clean).pow(2).mean().item()
    print(f"\nDenoisingAE, 400 steps of 64 in {seconds:.1f} s: MSE noisy {noise:.4f} -> denoised {denoised:.4f}")
    assert denoised < 0.5 * noise


@pytest.mark.slow
def test_ppca_on_mnist_in_seconds(mnist):
    model = PPCA(latent_dim=32)
    start = time.perf_counter()
    model.fit(DataLoader(TensorDataset(mnist["train_x"]), batch_size=500))
    seconds = time.perf_counter() - start
    nll = -model.log_likelihood(mnist["val_x"]).mean().item()
    mse = (model.reconstruct(mnist["val_x"]) - mnist["val_x"]).pow(2).mean().item()
    print(f"\nPPCA L=32 on 12k MNIST in {seconds:.1f} s: sigma^2 {model.noise_var.item():.4f}, val NLL {nll:.0f} "
          f"nats, reconstruction MSE {mse:.4f}")
    assert seconds < 20 and math.isfinite(nll) and mse < 0.03


@pytest.mark.slow
@pytest.mark.parametrize("flow", ["planar", "iaf"])
def test_flow_vae_trains_on_mnist(mnist, flow):
    model = FlowVAE(latent_dim=8, hidden=(256,), flow=flow)
    x, y = mnist["val_x"], mnist["val_y"]
    torch.manual_seed(0)
    before = model.eval().loss(x, y)
    seconds = quick_fit(model, mnist["train_x"], mnist["train_y"], steps=300)
    torch.manual_seed(0)
    after = model.eval().loss(x, y)
    print(f"\nFlowVAE {flow}, 300 steps in {seconds:.1f} s: -ELBO {before['loss']:.1f} -> {after['loss']:.1f} nats "
          f"(recon {after['recon']:.1f}, kl {after['kl']:.1f}, log_det {after['log_det']:.2f})")
    assert after["loss"] < 0.6 * before["loss"] and after["log_det"].abs() > 0.01
