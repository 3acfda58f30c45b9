"""DenoisingAE, CVAE, BaselineNN, PPCA and FlowVAE, one by one: conditions, denoising, the closed-form PPCA, and
short fits on real MNIST (marked slow). The contract tests shared by every preset are in test_family.py."""

import math
import time

import pytest
import torch
from lightning import Trainer
from scipy.linalg import subspace_angles
from torch.distributions import MultivariateNormal
from torch.utils.data import DataLoader, TensorDataset

from genlab.models import VAE
from genlab.models.ppca import PPCA
from genlab.models.presets import CVAE, BaselineNN, DenoisingAE, FlowVAE

SHAPE = (1, 16, 12)
TINY = dict(image_shape=SHAPE, latent_dim=4, hidden=(32,))


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, *SHAPE)


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


@pytest.mark.parametrize("condition, kind", [("none", None), ("label", "label"), ("quarter", "image")])
def test_condition_kind_says_what_decode_needs(condition, kind):
    model = CVAE(image_shape=(1, 8, 8), latent_dim=2, hidden=(8,), condition=condition, num_classes=3)
    assert model.condition_kind == kind
    if kind is not None:  # and decoding without the condition it names is refused
        with pytest.raises(ValueError, match="pass y"):
            model.decode(torch.zeros(1, 2))
    assert VAE(image_shape=(1, 8, 8), latent_dim=2, hidden=(8,)).condition_kind is None


def test_cvae_label_changes_the_sample():
    model = CVAE(**TINY, num_classes=10).eval()
    draw = lambda label: model.sample(4, y=torch.tensor([label]), generator=torch.Generator().manual_seed(0))  # noqa
    assert not torch.allclose(draw(1), draw(2))
    with pytest.raises(ValueError, match="pass y"):
        model.sample(2)


def test_cvae_quarter_gives_different_completions_of_one_quarter(images):
    model = CVAE(**TINY, condition="quarter").eval()
    samples = model.sample(6, y=images[:1], generator=torch.Generator().manual_seed(0))
    assert (samples - samples[:1]).abs().flatten(1).amax(1)[1:].min() > 0  # every completion differs
    changed = images[:1].clone()
    changed[:, :, : SHAPE[1] // 2] = 1 - changed[:, :, : SHAPE[1] // 2]  # outside the lower-left quarter
    assert torch.equal(samples, model.sample(6, y=changed, generator=torch.Generator().manual_seed(0)))


def test_baseline_is_deterministic_given_the_condition(images):
    model = BaselineNN(image_shape=SHAPE, hidden=(32,)).eval()
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
    model = DenoisingAE(image_shape=SHAPE, widths=(8, 16))
    noisy = model.corrupt(images, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, model.corrupt(images, torch.Generator().manual_seed(0)))
    assert 0 <= noisy.min() and noisy.max() <= 1 and (noisy - images).abs().mean() > 0.1
    assert torch.equal(CVAE(**TINY, condition="none").corrupt(images), images)


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
