"""The Autoencoder family's per-step work: one forward pass per step (validation's `mse` included), the KL weight
computed once, logging without host syncs, and the logged names unchanged."""

import pytest
import torch
from lightning import Trainer

from genlab.datamodules import FakeImages
from genlab.models import AE, VAE, DenoisingAE, FlowVAE

SHAPE = (1, 8, 8)


def binary_batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    x = (torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    return x, torch.zeros(n, dtype=torch.long)


def record_logs(model, monkeypatch) -> dict:
    """Replace `model.log` (which `log_dict` calls too) by a recorder of name -> value."""
    logged = {}
    monkeypatch.setattr(model, "log", lambda name, value, **kwargs: logged.__setitem__(name, value))
    return logged


def count_calls(module: torch.nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


MODELS = {
    "vae": lambda: VAE(SHAPE, latent_dim=3, hidden=(16,)),
    "vae_free_bits": lambda: VAE(SHAPE, latent_dim=3, hidden=(16,), free_bits=0.1),
    "flow_vae": lambda: FlowVAE(SHAPE, latent_dim=3, hidden=(16,), num_flows=2),
    "ae": lambda: AE(SHAPE, latent_dim=3, hidden=(16,)),
}
NAMES = {  # the terms each model logs, as before this change
    "vae": {"recon", "kl"}, "vae_free_bits": {"recon", "kl", "kl_free_bits"}, "flow_vae": {"recon", "kl", "log_det"},
    "ae": {"recon"},
}


@pytest.mark.parametrize("name", MODELS)
def test_logged_names_are_unchanged(name, monkeypatch):
    model, batch = MODELS[name](), binary_batch()
    logged = record_logs(model, monkeypatch)
    model.train()
    model._shared_step(batch, "train")
    kl_weight = {"train/kl_weight"} if name != "ae" else set()
    assert set(logged) == {f"train/{t}" for t in NAMES[name] | {"loss"}} | kl_weight
    logged.clear()
    model.eval()
    with torch.no_grad():
        model._shared_step(batch, "val")
    elbo = {"val/neg_elbo"} if name != "ae" else set()
    assert set(logged) == {f"val/{t}" for t in NAMES[name] | {"loss", "mse"}} | elbo


@pytest.mark.parametrize("name", MODELS)
def test_validation_runs_encoder_and_decoder_once_and_mse_is_the_deterministic_reconstructions(name, monkeypatch):
    model, (x, y) = MODELS[name](), binary_batch()
    model.eval()
    encoder_calls, decoder_calls = count_calls(model.encoder), count_calls(model.decoder)
    logged = record_logs(model, monkeypatch)
    torch.manual_seed(1)
    with torch.no_grad():
        model._shared_step((x, y), "val")
    assert (len(encoder_calls), len(decoder_calls)) == (1, 1)
    with torch.no_grad():
        expected_mse = (model.reconstruct(x, y) - x).pow(2).mean()
        torch.manual_seed(1)  # the same posterior draw as the step's
        expected = model.loss(x, y)
    torch.testing.assert_close(logged["val/mse"], expected_mse, rtol=1e-5, atol=1e-6)
    for term, value in expected.items():
        torch.testing.assert_close(logged[f"val/{term}"], value, rtol=1e-5, atol=1e-5)


def test_denoising_mse_is_of_the_clean_input_reconstruction(monkeypatch):
    model, (x, y) = DenoisingAE(SHAPE, widths=(4,), noise_std=0.5), binary_batch()
    model.eval()
    logged = record_logs(model, monkeypatch)
    with torch.no_grad():
        model._shared_step((x, y), "val")
        torch.testing.assert_close(logged["val/mse"], (model.reconstruct(x, y) - x).pow(2).mean())


def test_training_step_computes_the_kl_weight_once_and_logs_the_one_it_used(monkeypatch):
    model, batch = VAE(SHAPE, latent_dim=3, hidden=(16,), beta=2.0, kl_warmup_steps=10), binary_batch()
    monkeypatch.setattr(VAE, "global_step", property(lambda self: 5))
    calls = []
    kl_weight = model.bottleneck.kl_weight
    monkeypatch.setattr(model.bottleneck, "kl_weight", lambda step: calls.append(step) or kl_weight(step))
    logged = record_logs(model, monkeypatch)
    model.train()
    loss = model._shared_step(batch, "train")
    assert calls == [5]
    assert logged["train/kl_weight"] == pytest.approx(1.0)  # beta 2 at half the warm-up
    torch.testing.assert_close(loss.detach(), logged["train/recon"] + 1.0 * logged["train/kl"])


def test_training_step_logs_tensors_without_a_host_sync(monkeypatch):
    model, batch = VAE(SHAPE, latent_dim=3, hidden=(16,)), binary_batch()
    monkeypatch.setattr(model, "check_shape", lambda x: None)  # the input check's own sync is not logging
    logged = record_logs(model, monkeypatch)
    syncs = []
    for method in ("item", "cpu", "tolist", "__float__", "__bool__", "numpy"):
        original = getattr(torch.Tensor, method)

        def counted(self, *args, _original=original, _method=method, **kwargs):
            syncs.append(_method)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, method, counted)
    model.train()
    model._shared_step(batch, "train")
    monkeypatch.undo()
    assert syncs == []
    assert all(isinstance(logged[f"train/{t}"], torch.Tensor) and not logged[f"train/{t}"].requires_grad
               for t in ("loss", "recon", "kl"))


def test_fit_logs_the_same_names_through_lightning(tmp_path):
    model = VAE(SHAPE, latent_dim=3, hidden=(16,))
    data = FakeImages(image_shape=SHAPE, size=40, batch_size=10, val_fraction=0.25)
    trainer = Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    assert set(trainer.callback_metrics) == {"train/loss", "train/recon", "train/kl", "train/kl_weight", "val/loss",
                                             "val/recon", "val/kl", "val/mse"}
