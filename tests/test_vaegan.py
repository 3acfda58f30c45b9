"""VAEGAN: the model contract, its terms, the adaptive weight against its definition, the discriminator warm-up,
training, the command line and a two-process DDP fit (this file is also the DDP script:
`python tests/test_vaegan.py OUT`)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning import Callback, Trainer, seed_everything
from torch.utils.data import DataLoader, TensorDataset

from genlab.cli import main
from genlab.datamodules import FakeImages
from genlab.models import VAEGAN
from genlab.models.protocols import LatentModel, Sampler
from genlab.testing import ModelContract

SHAPE = (1, 16, 16)
TERMS = {"loss", "recon", "kl", "feature_match", "g_loss", "adaptive_weight", "g_weight"}
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]


def tiny(**settings) -> VAEGAN:
    return VAEGAN(SHAPE, **{"latent_dim": 4, "widths": (4, 8), "disc_width": 4, "disc_layers": 1, **settings})


def terms_at(model: VAEGAN, x: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """`loss(x)` with the posterior and prior noise fixed by `seed`."""
    torch.manual_seed(seed)
    return model.loss(x)


def fit(model: VAEGAN, data: torch.Tensor, batches: int, tmp_path: Path | None = None) -> Trainer:
    """`batches` training batches (global_step counts two optimiser steps per batch)."""
    trainer = Trainer(max_steps=2 * batches, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(model, DataLoader(TensorDataset(data, torch.zeros(len(data))), batch_size=16, shuffle=True))
    return trainer


class TestVAEGAN(ModelContract):
    protocols, reached_modules = (LatentModel, Sampler), ("encoder",)
    terms, stochastic, temperature_spreads = TERMS - {"loss"}, True, True
    skip = {"fit": "the loss holds D's terms, which move as D trains (test_a_short_fit_lowers_recon checks the fit)"}

    def make_model(self):
        return tiny(disc_start=1, feature_weight=0.5)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, *SHAPE)


def test_terms_are_finite_named_scalars_and_loss_is_their_weighted_sum(images):
    model = tiny(disc_start=0, pixel_weight=0.7, feature_weight=0.3, beta=2.0)
    terms = terms_at(model, images)
    assert set(terms) == TERMS
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    assert terms["g_weight"] == 0.5 * terms["adaptive_weight"] > 0  # disc_weight 0.5, past disc_start
    expected = 0.7 * terms["recon"] + 0.3 * terms["feature_match"] + 2.0 * terms["kl"] + \
        terms["g_weight"] * terms["g_loss"]
    assert torch.allclose(terms["loss"], expected)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])  # inference_mode: Lightning's test loop
def test_loss_gives_the_adaptive_weight_without_gradients_too(images, mode):
    model = tiny().eval()
    expected = terms_at(model, images)
    with mode():
        terms = terms_at(model, images)
    assert all(torch.allclose(terms[name], expected[name]) for name in TERMS)


def test_adaptive_weight_is_the_gradient_norm_ratio_at_the_decoders_last_layer(images):
    model = tiny(disc_start=0)
    terms = terms_at(model, images)
    grad_norm = {}
    for name in ("reconstruction", "g_loss"):  # each term's gradient by its own backward pass, on the same noise
        model.zero_grad()
        again = terms_at(model, images)
        (again["recon"] + again["feature_match"] if name == "reconstruction" else again["g_loss"]).backward()
        grad_norm[name] = model.last_layer.grad.norm()
    assert model.last_layer is model.decoder.net[-1].weight
    expected = grad_norm["reconstruction"] / (grad_norm["g_loss"] + 1e-4)
    assert torch.allclose(terms["adaptive_weight"], expected, rtol=1e-4)
    assert not terms["adaptive_weight"].requires_grad  # detached: lambda is a weight, not a path for gradients
    # Linear in the reconstruction term; clamped from above.
    pixel_only = [terms_at(tiny(disc_start=0, feature_weight=0.0, pixel_weight=w), images)["adaptive_weight"]
                  for w in (1.0, 3.0)]
    assert torch.allclose(pixel_only[1], 3 * pixel_only[0], rtol=1e-4)
    assert terms_at(tiny(disc_start=0, max_adaptive_weight=1e-3), images)["adaptive_weight"] == 1e-3


def decoder_grads(model: VAEGAN, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    terms_at(model, x)["loss"].backward()
    return [p.grad.clone() for p in model.decoder.parameters()]


@pytest.mark.parametrize("disc_start, adversarial", [(10, False), (0, True)])
def test_the_discriminator_sends_no_adversarial_gradient_before_disc_start(images, disc_start, adversarial):
    model = tiny(disc_start=disc_start)  # global_step 0, training mode
    terms = terms_at(model, images)
    assert (terms["g_weight"] > 0) == adversarial
    before = decoder_grads(model, images)
    with torch.no_grad():  # D's head scores patches: it reaches the generator through g_loss only, never through
        model.discriminator.head.weight.mul_(-3.0)  # feature matching, which reads the layer below it
    after = decoder_grads(model, images)
    same = all(torch.allclose(a, b, atol=1e-6) for a, b in zip(before, after))
    assert same != adversarial


def test_disc_start_counts_batches_and_d_trains_from_the_start():
    model, seen = tiny(disc_start=2), []
    generator_terms = model._generator_terms
    model._generator_terms = lambda *args: seen.append(generator_terms(*args)) or seen[-1]
    head = model.discriminator.head.weight.detach().clone()
    trainer = fit(model, torch.rand(64, *SHAPE), batches=4)
    assert trainer.global_step == 8 and model.batches_done == 4  # two optimiser steps per batch
    assert [float(t["g_weight"]) > 0 for t in seen] == [False, False, True, True]
    assert not torch.equal(head, model.discriminator.head.weight)


def test_a_short_fit_lowers_recon():
    data = torch.rand(1, *SHAPE).round().repeat(64, 1, 1, 1)  # one binary pattern: easy to learn
    model = tiny(disc_start=10, widths=(8, 16), lr=5e-3)  # the adversarial term is on for the last 30 batches
    before = terms_at(model.eval(), data)["recon"].item()
    fit(model.train(), data, batches=40)
    assert terms_at(model.eval(), data)["recon"].item() < 0.5 * before


@pytest.mark.parametrize("settings, message", [
    ({"disc_layers": 4}, "too deep"), ({"disc_start": -1}, "disc_start=-1"), ({"feature_weight": -1.0}, "-1.0"),
    ({"lr_d": 0.0}, "lr_d=0.0"), ({"beta1": 1.0}, "beta1=1.0")])
def test_bad_settings_name_the_value(settings, message):
    with pytest.raises(ValueError, match=message):
        tiny(**settings)


def test_cli_fit_then_test_on_shapes(tmp_path):
    common = ["--model=VAEGAN", "--data=Shapes", "--data.size=64", "--data.batch_size=16", "--model.latent_dim=4",
              "--model.widths=[8, 16]", "--model.disc_width=8", "--model.disc_start=2",
              f"--trainer.default_root_dir={tmp_path}", *QUIET]
    cli = main(["fit", "--trainer.max_epochs=1", *common])
    assert cli.trainer.state.finished and cli.model.batches_done > 2
    metrics = cli.trainer.callback_metrics
    assert {"val/recon", "val/kl", "val/mse", "train/d_loss", "train/adaptive_weight"} <= set(metrics)  # no
    # val/neg_elbo: a Bernoulli likelihood on Shapes' grey edges is a cross-entropy, not a likelihood
    assert list(tmp_path.rglob("figures/samples/*.png")) and list(tmp_path.rglob("figures/reconstructions/*.png"))
    last = next(p for p in tmp_path.rglob("last.ckpt"))
    assert VAEGAN.load_from_checkpoint(last).disc_start == 2
    tested = main(["test", f"--ckpt_path={last}", *common, "--metrics.num_fid_samples=0"]).trainer.callback_metrics
    assert all(torch.isfinite(tested[f"test/{name}"]) for name in ("psnr", "ssim", "bce", "posterior_kl"))


# --- two-process DDP on CPU (gloo), as tests/test_ddp.py does for the other families ---
class SeenImages(Callback):
    def __init__(self) -> None:
        self.images: list[bytes] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.images += [bytes(image.numpy().tobytes()) for image in (batch[0] * 255).round().byte().cpu()]


def ddp_fit(out: Path) -> None:
    torch.set_num_threads(1)
    seed_everything(0, verbose=False)
    model, seen = VAEGAN((1, 8, 8), latent_dim=4, widths=(4, 8), disc_width=4, disc_layers=1, disc_start=2), \
        SeenImages()
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      default_root_dir=out, callbacks=[seen])
    trainer.fit(model, datamodule=FakeImages((1, 8, 8), size=44, batch_size=4, num_classes=None))
    state = {key: value.cpu() for key, value in model.state_dict().items()}
    torch.save({"state": state, "seen": seen.images, "steps": trainer.global_step},
               out / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_two_process_ddp_fit_keeps_the_ranks_identical(tmp_path):
    root = Path(__file__).parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, str(tmp_path)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    different = [key for key in ranks[0]["state"] if not torch.equal(ranks[0]["state"][key], ranks[1]["state"][key])]
    assert not different, f"ranks disagree on {different}"
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 20 and not set(ranks[0]["seen"]) & set(ranks[1]["seen"])
    assert ranks[0]["steps"] == ranks[1]["steps"] == 10  # 5 batches per rank, two optimiser steps each


if __name__ == "__main__":
    ddp_fit(Path(sys.argv[1]))
