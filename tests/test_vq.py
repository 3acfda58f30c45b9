"""VectorQuantizer in a VQVAE, VQVAE and CodePrior: the model contract, then tiny fits (real
MNIST when slow)."""

import math
import time

import pytest
import torch
from lightning import Trainer
from torch.utils.data import DataLoader, TensorDataset

from genlab.models.protocols import CodebookModel, LatentModel, Sampler, SpatialLatent
from genlab.models.quantizer import VectorQuantizer
from genlab.models.vqvae import CodePrior, VQVAE
from genlab.testing import AutoencoderContract, ModelContract

SHAPE = (1, 16, 12)  # non-square on purpose; the code grid is 4x3
TINY = dict(image_shape=SHAPE, num_hiddens=16, num_residual_hiddens=8, num_residual_layers=1, num_embeddings=16,
            embedding_dim=4)


def quiet_trainer(**kwargs) -> Trainer:
    return Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, **kwargs)


def patterns(n: int = 64) -> torch.Tensor:
    """n images, each one lit quadrant of four on a dark background: learnable in a few steps, needs several codes."""
    base = torch.zeros(4, *SHAPE)
    h, w = SHAPE[1] // 2, SHAPE[2] // 2
    for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        base[k, :, i * h:(i + 1) * h, j * w:(j + 1) * w] = 1.0
    return base[torch.arange(n) % 4]


def loader(x: torch.Tensor, batch_size: int = 16) -> DataLoader:
    return DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=batch_size)


PLAIN = {"ema": False, "kmeans_init": False, "dead_code_steps": 0}  # the paper's plain VQ: the ablation baseline
QUANTIZER_TERMS = {"recon", "commitment", "perplexity", "usage", "z_min", "z_max", "z_std"}


# --- the contract (a VQ-VAE is not a Sampler: its samples come from a CodePrior) ---
class TestVQVAE(AutoencoderContract):
    """The default codebook (EMA, k-means init), with restarts after one unused step so that every codebook path
    runs in the fit, checkpoint and bf16 checks."""

    protocols, flat_latent = (LatentModel, SpatialLatent, CodebookModel), False
    stochastic, temperature_spreads = False, None
    terms, term_weights = QUANTIZER_TERMS, {"commitment": 0.25}
    hparams = {"image_shape", "num_hiddens", "num_residual_hiddens", "num_residual_layers", "num_embeddings",
               "embedding_dim", "commitment_cost", "ema", "decay", "dead_code_steps", "kmeans_init", "likelihood",
               "sigma", "lr"}

    def make_model(self):
        return VQVAE(**TINY, dead_code_steps=1, lr=1e-2)


class TestVQVAEPlain(TestVQVAE):
    terms, term_weights = QUANTIZER_TERMS | {"codebook"}, {"commitment": 0.25, "codebook": 1.0}
    skip = {"fit": "the codebook and commitment terms grow while z_e leaves the random codebook: recon falls, the "
                   "total does not in 40 steps (test_a_tiny_fit_lowers_the_reconstruction_loss checks recon)"}

    def make_model(self):
        return VQVAE(**TINY, **PLAIN, lr=1e-2)


class TestCodePrior(ModelContract):
    protocols, temperature_spreads = (Sampler,), None
    terms = {"nll"}
    hparams = {"vqvae_checkpoint", "hidden", "num_layers", "lr"}

    @pytest.fixture(autouse=True, scope="class")
    def _vqvae_checkpoint(self, request, tmp_path_factory) -> None:
        """One briefly trained VQ-VAE's checkpoint for the class: every check's prior reads it."""
        trainer = quiet_trainer(max_steps=3)
        trainer.fit(VQVAE(**TINY), loader(patterns(16), 8))
        request.cls.vqvae_checkpoint = str(tmp_path_factory.mktemp("vqvae") / "vqvae.ckpt")
        trainer.save_checkpoint(request.cls.vqvae_checkpoint)

    def make_model(self):
        return CodePrior(self.vqvae_checkpoint, hidden=8, num_layers=1, lr=3e-3)


# --- the quantizer ---
def test_straight_through_gradient_reaches_the_encoder():
    vq = VectorQuantizer(num_embeddings=8, embedding_dim=3)
    h = torch.randn(2, 3, 2, 2, requires_grad=True)
    z_q, _ = vq(h)
    (z_q * torch.arange(24.0).view(2, 3, 2, 2)).sum().backward()
    assert torch.equal(h.grad, torch.arange(24.0).view(2, 3, 2, 2))  # identity: d z_q / d z_e = 1
    # in a VQVAE with no commitment term, the encoder learns from the reconstruction alone
    model = VQVAE(**TINY, commitment_cost=0.0)
    model.loss(torch.rand(4, *SHAPE))["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


# --- the VQVAE preset ---
@pytest.mark.parametrize("shape, grid", [((1, 28, 28), (7, 7)), ((3, 32, 32), (8, 8))])
def test_vqvae_shapes(shape, grid):
    model = VQVAE(image_shape=shape, num_hiddens=16, num_residual_hiddens=8, embedding_dim=4).eval()
    x = torch.rand(2, *shape)
    assert model.encode(x).shape == (2, 4, *grid) and model.encode_indices(x).shape == (2, *grid)
    out = model.reconstruct(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert model.latent_dim == 4 and model.grid_shape == grid


def test_vqvae_is_not_a_sampler_and_its_doc_says_how():
    model = VQVAE(**TINY)
    assert not isinstance(model, Sampler) and not hasattr(model, "sample") and "CodePrior" in VQVAE.__doc__
    with pytest.raises(NotImplementedError, match="CodePrior"):
        model.bottleneck.sample_prior(2)


def test_checkpoint_keeps_the_codebook_state(tmp_path):
    model = VQVAE(**TINY, ema=True, kmeans_init=True)
    trainer = quiet_trainer(max_steps=3)
    trainer.fit(model, loader(patterns(16), 8))
    trainer.save_checkpoint(tmp_path / "vq.ckpt")
    restored = VQVAE.load_from_checkpoint(tmp_path / "vq.ckpt")
    assert restored.bottleneck.initialized  # no second k-means when training resumes
    for name, value in model.bottleneck.state_dict().items():
        assert torch.equal(value, restored.bottleneck.state_dict()[name]), name
    x = patterns(4)
    assert torch.equal(model.eval().encode_indices(x), restored.eval().encode_indices(x))


def test_vqvae_rejects_sizes_not_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        VQVAE(image_shape=(1, 30, 28))


def test_defaults_are_the_healthy_codebook_and_plain_vq_is_a_setting():
    vq = VQVAE(**TINY).bottleneck
    assert vq.ema and vq.decay == 0.99 and vq.dead_code_steps == 20 and not vq.initialized  # k-means on batch 1
    assert vq.weights == {"commitment": 0.25} and not vq.codebook.requires_grad
    plain = VQVAE(**TINY, **PLAIN, commitment_cost=0.0).bottleneck
    assert not plain.ema and plain.dead_code_steps == 0 and plain.initialized and plain.codebook.requires_grad
    assert plain.weights == {"commitment": 0.0, "codebook": 1.0}


@pytest.mark.parametrize("options", [PLAIN, {}], ids=["plain", "defaults"])
def test_a_tiny_fit_lowers_the_reconstruction_loss(options):
    data = patterns()
    model = VQVAE(**TINY, lr=1e-2, **options)
    before = model.loss(data)["recon"].item()
    quiet_trainer(max_steps=40).fit(model, loader(data))
    model.eval()
    assert model.loss(data)["recon"].item() < 0.5 * before


# --- CodePrior ---
@pytest.fixture
def vqvae_checkpoint(tmp_path) -> str:
    trainer = quiet_trainer(max_steps=20)
    trainer.fit(VQVAE(**TINY, kmeans_init=True), loader(patterns()))
    path = str(tmp_path / "vqvae.ckpt")
    trainer.save_checkpoint(path)
    return path


def test_code_prior_learns_and_samples(vqvae_checkpoint):
    prior = CodePrior(vqvae_checkpoint, hidden=16, num_layers=2, lr=3e-3)
    held_out = patterns(16)
    before = prior.nll(held_out).item()
    quiet_trainer(max_steps=30).fit(prior, loader(patterns()))
    after = prior.nll(held_out).item()
    assert after < 0.5 * before, (before, after)
    assert not any(p.requires_grad for p in prior.vqvae.parameters()) and not prior.vqvae.training
    images = prior.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, *SHAPE) and 0 <= images.min() and images.max() <= 1
    again = prior.sample(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(images, again)


def test_masked_convs_are_causal():
    from genlab.models.vqvae import PixelCNN

    net = PixelCNN(num_embeddings=5, hidden=8, num_layers=2)
    indices = torch.randint(5, (1, 4, 4))
    changed = indices.clone()
    changed[0, 2, 1] = (changed[0, 2, 1] + 1) % 5  # change one code; only later positions may notice
    diff = (net(indices) - net(changed)).abs().sum(1)[0]  # (4, 4)
    raster = torch.arange(16).view(4, 4)
    assert (diff[raster <= 2 * 4 + 1] == 0).all()


# --- real MNIST ---
@pytest.fixture(scope="module")
def mnist(mnist_root):
    from genlab.datamodules import MNIST

    data = MNIST(root=mnist_root, batch_size=128)
    data.setup("fit")
    return data


@pytest.fixture(scope="module")
def mnist_vqvae(mnist) -> tuple[VQVAE, torch.Tensor, float, float]:
    """A VQVAE after 150 steps on MNIST with the default codebook (EMA, restarts, k-means init), 512 val images,
    recon before, seconds."""
    model = VQVAE(num_hiddens=64, num_residual_hiddens=32, num_embeddings=512, embedding_dim=32)
    val_x = torch.stack([mnist.dataset("val")[i][0] for i in range(512)])
    with torch.no_grad():
        before = model.eval().loss(val_x)["recon"].item()
    model.train()  # Lightning keeps the mode it finds; in eval the quantizer would never update its codes
    start = time.perf_counter()
    quiet_trainer(max_steps=150).fit(model, mnist.train_dataloader())
    return model.eval(), val_x, before, time.perf_counter() - start


@pytest.mark.slow
def test_vqvae_on_mnist_reconstructs_and_uses_most_codes(mnist_vqvae):
    model, val_x, before, seconds = mnist_vqvae
    with torch.no_grad():
        after = model.loss(val_x)["recon"].item()
        usage = model.encode_indices(val_x).unique().numel() / model.bottleneck.num_embeddings
    print(f"\nVQVAE MNIST 150 steps: recon {before:.1f} -> {after:.1f} nats, codes used on 512 val images "
          f"{usage:.2f}, {seconds:.1f} s")
    assert after < 0.6 * before and usage > 0.5


@pytest.mark.slow
def test_code_prior_on_mnist_codes_lowers_held_out_nll(mnist_vqvae, mnist, tmp_path):
    model, val_x, _, _ = mnist_vqvae
    trainer = quiet_trainer(max_steps=1)
    trainer.strategy.connect(model)  # save_checkpoint needs a trainer attached to the model
    path = tmp_path / "vqvae.ckpt"
    trainer.save_checkpoint(path)
    prior = CodePrior(str(path))
    with torch.no_grad():
        before = prior.nll(val_x).item()
    start = time.perf_counter()
    quiet_trainer(max_steps=100).fit(prior, mnist.train_dataloader())
    with torch.no_grad():
        after = prior.nll(val_x).item()
    print(f"\nCodePrior MNIST 100 steps: held-out nll {before:.1f} -> {after:.1f} nats/image "
          f"(uniform: {49 * math.log(512):.1f}), {time.perf_counter() - start:.1f} s")
    assert after < 0.8 * before
    assert prior.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 28, 28)


def test_cli_fits_a_vqvae_then_its_code_prior(tmp_path):
    from genlab.cli import main

    common = ["--data=FakeImages", "--data.image_shape=[1, 16, 12]", "--data.size=16", "--data.batch_size=8",
              "--trainer.max_epochs=1", "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path}",
              "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    main(["fit", "--model=genlab.models.vqvae.VQVAE", "--model.num_hiddens=8", "--model.num_residual_hiddens=4",
          "--model.num_embeddings=8", "--model.embedding_dim=4", *common])
    (vqvae_ckpt,) = tmp_path.glob("**/version_0/checkpoints/last.ckpt")
    main(["fit", "--model=genlab.models.vqvae.CodePrior", f"--model.vqvae_checkpoint={vqvae_ckpt}",
          "--model.hidden=8", "--model.num_layers=1", *common])
    (best,) = tmp_path.glob("**/version_1/checkpoints/best-*.ckpt")  # monitored val/loss = held-out nll
    prior = CodePrior.load_from_checkpoint(best)
    assert prior.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, *SHAPE)
