"""`NonFiniteGuard`: it names the step and the term or parameter of the first NaN/Inf, read at once or late, and never
lets a checkpoint store non-finite weights."""

import re
from types import SimpleNamespace

import pytest
import torch
from lightning import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from genlab.run_control import NonFiniteError, NonFiniteGuard
from genlab.models.module import GenerativeModule


def guarded_step(grad: float = 1.0, loss: float = 1.0, weight: float = 1.0):
    """A fake trainer, a two-parameter module with the given gradient/weight values, its optimiser and the guard."""
    trainer = SimpleNamespace(current_epoch=2, global_step=7, checkpoint_callbacks=[], callback_metrics={},
                              precision_plugin=SimpleNamespace())
    module = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(module.weight, weight)
    module.weight.grad, module.bias.grad = torch.tensor([[grad, 0.0]]), torch.zeros(1)
    guard = NonFiniteGuard()
    guard.on_before_backward(trainer, module, torch.tensor(loss))
    return guard, trainer, module, torch.optim.SGD(module.parameters(), lr=0.1)


def test_guard_passes_finite_steps_and_names_the_bad_gradient_or_loss():
    guard, trainer, module, optimizer = guarded_step()
    guard.on_before_optimizer_step(trainer, module, optimizer)
    guard.on_save_checkpoint(trainer, module, {})
    huge = guarded_step(grad=3e38)  # finite, if huge: its square overflows the norm, the exact look then passes it
    huge[0].on_before_optimizer_step(*huge[1:])
    guard, trainer, module, optimizer = guarded_step(grad=float("nan"))
    with pytest.raises(NonFiniteError, match=r"^non-finite gradient \(gradient of weight\) at epoch 2, global step 7"):
        guard.on_before_optimizer_step(trainer, module, optimizer)
    guard, trainer, module, optimizer = guarded_step(loss=float("inf"))
    with pytest.raises(NonFiniteError, match=r"^non-finite loss \(backpropagated\) = inf at epoch 2, global step 7"):
        guard.on_before_optimizer_step(trainer, module, optimizer)
    guard, trainer, module, optimizer = guarded_step(weight=float("inf"))
    with pytest.raises(NonFiniteError, match=r"^non-finite weights after the optimiser step \(weight\)"):
        guard.on_save_checkpoint(trainer, module, {})


def test_guard_happy_path_looks_at_no_parameter_one_by_one(monkeypatch):
    guard, trainer, module, optimizer = guarded_step()
    monkeypatch.setattr(torch.nn.Module, "named_parameters", lambda *a, **k: pytest.fail("per-parameter scan"))
    guard.on_before_optimizer_step(trainer, module, optimizer)


class PoisonGradient(torch.autograd.Function):
    """The identity forward; a NaN gradient backward (a finite loss with a non-finite gradient, e.g. sqrt at 0)."""

    @staticmethod
    def forward(ctx, weight):
        return weight.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


class BadAtStep(GenerativeModule):
    """A linear autoencoder whose step `bad_step` has a NaN term ("kl") or a NaN gradient of `net.weight`."""

    def __init__(self, bad_step: int, what: str) -> None:
        super().__init__()
        self.net, self.bad_step, self.what = torch.nn.Linear(4, 4), bad_step, what

    def loss(self, x, y=None):
        bad = self.training and self.global_step == self.bad_step
        weight = PoisonGradient.apply(self.net.weight) if bad and self.what == "gradient" else self.net.weight
        recon = (torch.nn.functional.linear(x, weight, self.net.bias) - x).pow(2).sum(1).mean()
        kl = torch.tensor(float("nan") if bad and self.what == "term" else 0.0)
        return {"loss": recon + kl, "recon": recon, "kl": kl}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def fit_bad(what: str, guard: NonFiniteGuard, *callbacks: Callback, **kwargs) -> NonFiniteError:
    """Fit `BadAtStep` (bad at step 2) on the CPU under `guard` and return the error it raises."""
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(60, 4), torch.zeros(60)),
                                       batch_size=6)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, max_steps=10, callbacks=[guard, *callbacks], **kwargs)
    with pytest.raises(NonFiniteError) as error:
        trainer.fit(BadAtStep(2, what), data)
    return error.value


def test_guard_read_late_still_names_the_first_bad_step():
    late = {"sync_every_n_steps": 5, "gradients_every_n_steps": 1}  # an accelerator's defaults, on the CPU
    error = fit_bad("term", NonFiniteGuard(**late), enable_checkpointing=False)
    assert re.match(r"non-finite train/loss = nan, train/kl = nan.* at epoch 0, global step 2;", str(error))
    error = fit_bad("gradient", NonFiniteGuard(**late), enable_checkpointing=False)
    assert str(error).startswith("non-finite gradient (gradient of net.weight) at epoch 0, global step 2;")


def test_guard_names_an_unchecked_bad_gradient_by_the_weights_it_broke():
    # CPU defaults: the loss every step, the gradients every log_every_n_steps (50): step 2's NaN gradient is applied,
    # and step 3's loss names the step and the parameter
    error = fit_bad("gradient", NonFiniteGuard(), enable_checkpointing=False)
    assert str(error).startswith("non-finite weights after the optimiser step (net.weight), whose gradients were not "
                                 "checked at epoch 0, global step 2;")
    error = fit_bad("gradient", NonFiniteGuard(gradients_every_n_steps=1), enable_checkpointing=False)
    assert str(error).startswith("non-finite gradient (gradient of net.weight) at epoch 0, global step 2;")


def test_guard_read_late_never_lets_a_checkpoint_store_a_bad_step(tmp_path):
    saving = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_last=True, save_top_k=-1)
    error = fit_bad("gradient", NonFiniteGuard(sync_every_n_steps=100, gradients_every_n_steps=1), saving)
    assert str(error).startswith("non-finite gradient (gradient of net.weight) at epoch 0, global step 2;")
    assert str(tmp_path / "last.ckpt") in str(error)
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt",
                                                              "last.ckpt"]
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in state.values())


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3"])
def test_guard_periods_must_be_positive_integers(bad):
    with pytest.raises(ValueError, match=rf"sync_every_n_steps must be an integer >= 1 or None .*got {bad!r}"):
        NonFiniteGuard(sync_every_n_steps=bad)
    with pytest.raises(ValueError, match=rf"gradients_every_n_steps must be an integer >= 1 .*got {bad!r}"):
        NonFiniteGuard(gradients_every_n_steps=bad)


def test_guard_on_the_cpu_reads_the_gradients_every_log_every_n_steps(monkeypatch):
    norms, foreach_norm = [], torch._foreach_norm
    monkeypatch.setattr(torch, "_foreach_norm", lambda tensors, *a, **k: norms.append(len(tensors)) or
                        foreach_norm(tensors, *a, **k))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(60, 4), torch.zeros(60)),
                                       batch_size=6)
    Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False, max_steps=10, log_every_n_steps=4,
            callbacks=[NonFiniteGuard()]).fit(BadAtStep(-1, "none"), data)
    assert norms == [2, 2, 2]  # steps 0, 4 and 8: weight and bias
