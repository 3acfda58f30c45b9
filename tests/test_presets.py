"""The presets: settings of one construction (architecture, prior, KL control), with every old class unchanged."""

from collections.abc import Sequence

import pytest
import torch
from lightning import Trainer
from torch.utils.data import DataLoader, TensorDataset

from genlab.models import AE, CVAE, VAE, BaselineNN, ConvAE, ConvVAE, DenoisingAE, FlowVAE, RealNVPPrior
from genlab.models.bottlenecks import FlowGaussianBottleneck
from genlab.models.presets import Preset, autoencoder_arguments, gaussian_bottleneck, preset_arguments
from genlab.models.resnet import ResidualBlock, ResNetDecoder, ResNetEncoder

from adam_steps import losses_before_and_after

SHAPE = (1, 8, 8)
MLP = dict(image_shape=SHAPE, latent_dim=3, hidden=(16,))
CONV = dict(image_shape=SHAPE, latent_dim=3, widths=(4, 8))

# Recorded from the presets as they were before they became settings (commit 5ba3573), seed-independent: parameter
# count, state_dict size and the modules holding the entries. A checkpoint of any of them must keep loading.
RECORDED = {
    "AE": (lambda: AE(**MLP), 2243, 8, "encoder.1.0 encoder.1.2 decoder.0.0 decoder.0.2"),
    "VAE": (lambda: VAE(**MLP), 2294, 8, "encoder.1.0 encoder.1.2 decoder.0.0 decoder.0.2"),
    "VAE_mixture": (lambda: VAE(**{**MLP, "image_shape": (3, 8, 8)}, likelihood="logistic_mixture",
                                mixture_components=2), 22838, 8, "encoder.1.0 encoder.1.2 decoder.0.0 decoder.0.2"),
    "ConvAE": (lambda: ConvAE(**CONV), 892, 12,
               "encoder.net.0 encoder.net.2 encoder.net.5 decoder.net.0 decoder.net.2 decoder.net.4"),
    "ConvVAE": (lambda: ConvVAE(**CONV), 991, 12,
                "encoder.net.0 encoder.net.2 encoder.net.5 decoder.net.0 decoder.net.2 decoder.net.4"),
    "ConvVAE_attention": (
        lambda: ConvVAE(image_shape=(1, 16, 16), latent_dim=3, widths=(8, 16), batch_norm=True,
                        attention_resolutions=(8,)), 5273, 37,
        "encoder.net.0 encoder.net.1 encoder.net.3 encoder.net.3.query encoder.net.3.key encoder.net.3.value "
        "encoder.net.3.out encoder.net.4 encoder.net.5 encoder.net.8 decoder.net.0 decoder.net.2 decoder.net.3 "
        "decoder.net.5 decoder.net.5.query decoder.net.5.key decoder.net.5.value decoder.net.5.out decoder.net.6"),
    "DenoisingAE": (lambda: DenoisingAE(image_shape=SHAPE, widths=(4, 8)), 697, 23,
                    "encoder.0 encoder.1 encoder.4 encoder.5 decoder.1 decoder.2 decoder.4"),
    "CVAE": (lambda: CVAE(**MLP, num_classes=10), 2614, 8, "encoder.1.0 encoder.1.2 decoder.0.0 decoder.0.2"),
    "CVAE_quarter": (lambda: CVAE(**MLP, condition="quarter"), 2806, 8,
                     "encoder.1.0 encoder.1.2 decoder.0.0 decoder.0.2"),
    "CVAE_none": (lambda: CVAE(**MLP, condition="none"), 2294, 8, "encoder.1.0 encoder.1.2 decoder.0.0 decoder.0.2"),
    "BaselineNN": (lambda: BaselineNN(image_shape=SHAPE, hidden=(16,)), 1360, 4, "decoder.0.0 decoder.0.2"),
    "FlowVAE": (lambda: FlowVAE(**MLP, num_flows=2), 2532, 8, "encoder.1.0 encoder.1.2 decoder.0.0 decoder.0.2"),
    "FlowVAE_iaf": (lambda: FlowVAE(**MLP, flow="iaf", num_flows=2), 2918, 24,
                    "encoder.1.0 encoder.1.2 bottleneck.flows.0.input bottleneck.flows.0.context "
                    "bottleneck.flows.0.output bottleneck.flows.1.input bottleneck.flows.1.context "
                    "bottleneck.flows.1.output decoder.0.0 decoder.0.2"),
}
DEFAULT_PARAMETERS = {AE: 1075488, VAE: 1079600, ConvAE: 712835, ConvVAE: 975107, DenoisingAE: 11905,
                      FlowVAE: 1113524, BaselineNN: 584208}  # and CVAE(num_classes=10): 1087280


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def binary_images(n: int = 8, shape: Sequence[int] = SHAPE) -> torch.Tensor:
    """n binary images with one factor to learn: image i has its top i rows (cyclically) lit."""
    rows = torch.arange(shape[1])[None, :, None]
    lit = (rows < (torch.arange(n) % (shape[1] + 1))[:, None, None]).float()
    return lit.expand(n, shape[1], shape[2])[:, None].expand(n, *shape).clone()


@pytest.mark.parametrize("name", RECORDED)
def test_every_preset_builds_the_parameters_and_state_dict_it_had(name):
    make, parameters, entries, modules = RECORDED[name]
    model = make()
    state = model.state_dict()
    assert parameter_count(model) == parameters
    assert len(state) == entries
    assert list(dict.fromkeys(key.rpartition(".")[0] for key in state)) == modules.split()


def test_default_presets_have_the_parameter_counts_they_had():
    for cls, parameters in DEFAULT_PARAMETERS.items():
        assert parameter_count(cls()) == parameters, cls.__name__
    assert parameter_count(CVAE(num_classes=10)) == 1087280


def test_a_checkpoint_without_the_new_settings_still_loads(tmp_path):
    model = ConvVAE(**CONV)
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_steps=0)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)
    for name in ("architecture", "prior", "prior_layers", "tc_weight"):  # what a checkpoint written before them holds
        del checkpoint["hyper_parameters"][name]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    restored = ConvVAE.load_from_checkpoint(tmp_path / "old.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), model.state_dict().values()))
    assert restored.bottleneck.tc_weight == 1.0 and "tc" not in restored.loss(binary_images())


# --- the ResNet networks ---
@pytest.mark.parametrize("shape", [(1, 28, 20), (3, 9, 7)])
def test_resnet_networks_keep_any_image_size(shape):
    encoder, decoder = ResNetEncoder(shape, 6, (8, 16)), ResNetDecoder(3, shape, (8, 16))
    x = torch.rand(2, *shape)
    assert encoder(x).shape == (2, 6)
    assert decoder(torch.randn(2, 3)).shape == (2, *shape)


def test_residual_block_adds_its_branch_and_keeps_the_shape():
    block = ResidualBlock(4, batch_norm=True)
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(block(x), x + block.net(x))
    torch.nn.init.zeros_(block.net[-1].weight)
    torch.nn.init.zeros_(block.net[-1].bias)
    assert torch.equal(block(x), x)  # a zero branch: the identity


def test_resnet_architecture_with_batch_norm_and_attention_builds():
    model = ConvVAE(image_shape=(1, 16, 16), latent_dim=3, widths=(8, 16), batch_norm=True,
                    attention_resolutions=(8,), architecture="resnet")
    assert isinstance(model.encoder, ResNetEncoder) and isinstance(model.decoder, ResNetDecoder)
    assert model.sample(2).shape == (2, 1, 16, 16)


@pytest.mark.parametrize("cls", [ConvAE, ConvVAE])
def test_resnet_architecture_trains(cls):
    before, after = losses_before_and_after(cls(**CONV, architecture="resnet"), binary_images())
    assert after < 0.9 * before


# --- the learned prior ---
@pytest.mark.parametrize("make", [
    lambda: VAE(**MLP, prior="realnvp", prior_layers=2),
    lambda: ConvVAE(**CONV, prior="realnvp", architecture="resnet"),
    lambda: CVAE(**MLP, num_classes=10, prior="realnvp"),
    lambda: FlowVAE(**MLP, flow="iaf", num_flows=2, prior="realnvp"),
], ids=["VAE", "ConvVAE", "CVAE", "FlowVAE"])
def test_realnvp_prior_gives_finite_terms_and_samples(make):
    model = make()
    gaussian = model.bottleneck.base if isinstance(model.bottleneck, FlowGaussianBottleneck) else model.bottleneck
    assert isinstance(gaussian.prior, RealNVPPrior)
    x, y = binary_images(4), torch.tensor([0, 1, 2, 3])
    y = y if model.condition_kind else None
    terms = model.loss(x, y)
    assert all(torch.isfinite(t) for t in terms.values())
    log_w = model.log_importance_weights(x, y, num_samples=3, generator=torch.Generator().manual_seed(0))
    assert log_w.shape == (3, 4) and torch.isfinite(log_w).all()
    samples = model.sample(5, y[:1] if y is not None else None, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, *SHAPE) and 0 <= samples.min() and samples.max() <= 1


def test_realnvp_prior_starts_as_the_normal_prior_and_is_trained():
    normal, learned = VAE(**MLP), VAE(**MLP, prior="realnvp", prior_layers=2)
    learned.load_state_dict(normal.state_dict(), strict=False)  # same encoder and decoder; the prior on top
    x = binary_images(4)
    weights = [m.log_importance_weights(x, num_samples=5, generator=torch.Generator().manual_seed(0))
               for m in (normal, learned)]
    assert torch.allclose(*weights, atol=1e-5)  # the coupling prior is the identity at initialisation
    optimizer = torch.optim.Adam(learned.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        learned.loss(x)["loss"].backward()
        optimizer.step()
    z = torch.randn(6, 3)
    assert not torch.allclose(learned.bottleneck.prior_log_prob(z), normal.bottleneck.prior_log_prob(z))


# --- settings: bad values, the CLI, and a variant as one small class ---
@pytest.mark.parametrize("make, message", [
    (lambda: ConvVAE(**CONV, architecture="mlp"), "architecture='mlp' is unknown; choose one of ('conv', 'resnet')"),
    (lambda: ConvAE(**CONV, architecture="ResNet"), "architecture='ResNet' is unknown"),
    (lambda: VAE(**MLP, prior="flow"), "prior='flow' is unknown; choose one of ('normal', 'realnvp')"),
    (lambda: FlowVAE(**MLP, prior="Normal"), "prior='Normal' is unknown"),
    (lambda: VAE(**MLP, prior="realnvp", prior_layers=0), "prior_layers=0 is invalid"),
])
def test_bad_settings_are_one_clear_line(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_cli_fits_a_resnet_vae_with_a_realnvp_prior_and_reloads_it(tmp_path):
    from genlab.cli import main

    main(["fit", "--model=ConvVAE", "--model.architecture=resnet", "--model.prior=realnvp", "--model.latent_dim=4",
          "--model.widths=[8, 16]", "--data=FakeImages", "--data.image_shape=[1, 16, 12]", "--data.size=16",
          "--data.batch_size=8", "--trainer.max_epochs=1", "--trainer.accelerator=cpu",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
          f"--trainer.default_root_dir={tmp_path}"])
    last = next(tmp_path.rglob("last.ckpt"))
    model = ConvVAE.load_from_checkpoint(last)
    assert isinstance(model.encoder, ResNetEncoder) and isinstance(model.bottleneck.prior, RealNVPPrior)


class SmallResNetVAE(Preset):
    """A variant written as one small class: its own signature, then the settings passed on by name.

    Args:
        widths: channels of the ResNet stages.
    """

    def __init__(self, image_shape: Sequence[int] = SHAPE, latent_dim: int = 2, widths: Sequence[int] = (8,),
                 beta: float = 0.5) -> None:
        settings = preset_arguments(locals())
        bottleneck = gaussian_bottleneck(**settings)
        super().__init__(**autoencoder_arguments({**settings, "architecture": "resnet"}, bottleneck))


def test_a_variant_is_one_small_class(tmp_path):
    model = SmallResNetVAE()
    assert isinstance(model.encoder, ResNetEncoder) and model.bottleneck.beta == 0.5
    assert dict(model.hparams) == {"image_shape": SHAPE, "latent_dim": 2, "widths": (8,), "beta": 0.5,
                                   "likelihood": "bernoulli", "sigma": 1.0, "lr": 1e-3}
    data = DataLoader(TensorDataset(binary_images(8), torch.zeros(8, dtype=torch.long)), batch_size=4)
    trainer = Trainer(default_root_dir=tmp_path, max_steps=2, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, data)
    trainer.save_checkpoint(tmp_path / "small.ckpt")
    restored = SmallResNetVAE.load_from_checkpoint(tmp_path / "small.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), model.state_dict().values()))
