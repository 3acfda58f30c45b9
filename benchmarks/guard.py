"""Cost of `NonFiniteGuard` per training step: guard on vs off (not a test).

Two models, batch 100, one intra-op thread on the CPU: the MLP VAE on MNIST-shaped FakeImages (1, 28, 28) and the
course ConvVAE (three stride-2 convs 32/64/128, latent 128) on (3, 32, 32). Each setting fits `--steps` steps with
`Trainer.fit` (no logger, checkpoints or validation, so the guard is not hidden behind them); the time from step
`--warmup` to the end is divided by the steps. Settings run interleaved for `--rounds` rounds (each round starting
with the next setting, as a first run is often slower), and the overhead is
the median over rounds of (on - off) / off: on a shared machine the load drifts, which interleaving cancels.
A loaded machine still blurs a 1 % difference, so the guard's hooks are also timed inside each step of a plain loop
(forward, backward, Adam): "hooks" is their time over the rest of the step, summed over the steps -- measured within
the same steps, so drift cancels, and without Lightning's own per-step work, so it overstates the share in a fit.
Settings: "off", "on" (the defaults for the device) and "on, gradients every step" (on the CPU the gradients are
otherwise checked every `log_every_n_steps` steps). `--old PATH` adds the `NonFiniteGuard` defined in that file
(e.g. a previous version, written out with `git show REV:genlab/run_control/guard.py > old.py`; before the
move, `genlab/callbacks/reliability.py`).

    python benchmarks/guard.py                     # CPU
    python benchmarks/guard.py --device cuda --threads 4
"""

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from lightning import Callback, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # genlab from this checkout, installed or not

from genlab.run_control import NonFiniteGuard  # noqa: E402
from genlab.datamodules import FakeImages  # noqa: E402
from genlab.models import VAE, ConvVAE  # noqa: E402
from genlab.models.module import adam  # noqa: E402

BATCH = 100
MODELS = {
    "MLP VAE (1, 28, 28)": ((1, 28, 28), lambda shape: VAE(shape, latent_dim=16, hidden=(512, 256))),
    "course ConvVAE (3, 32, 32)": ((3, 32, 32), lambda shape: ConvVAE(shape, latent_dim=128, widths=(32, 64, 128))),
}


class StepTimer(Callback):
    """Seconds per training step from step `warmup` on."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.steps = warmup, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self._sync(pl_module)
            self.start, self.steps = time.perf_counter(), 0
        self.steps += 1

    def on_train_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.seconds = (time.perf_counter() - self.start) / self.steps

    @staticmethod
    def _sync(pl_module) -> None:
        sync(pl_module.device.type)


def step_time(make, shape, guard: Callback | None, steps: int, warmup: int, device: str) -> float:
    torch.manual_seed(0)
    timer = StepTimer(warmup)
    trainer = Trainer(accelerator=device, devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, callbacks=[timer] + ([guard] if guard is not None else []))
    data = FakeImages(shape, size=BATCH * 20, batch_size=BATCH, num_classes=None, val_fraction=0.0)
    trainer.fit(make(shape), datamodule=data)
    return timer.seconds


def hook_share(make, shape, guard_type: type, steps: int, warmup: int, device: str) -> float:
    """Time in the guard's hooks / time in the rest of the step, in a plain training loop."""
    torch.manual_seed(0)
    model = make(shape).to(device)
    optimizer = adam(model.parameters(), lr=1e-3)  # as in a fit
    x = torch.rand(BATCH, *shape, device=device).round()
    batch = (x, torch.zeros(BATCH, dtype=torch.long, device=device))
    guard = guard_type()
    trainer = SimpleNamespace(precision_plugin=SimpleNamespace(), callback_metrics={}, current_epoch=0, global_step=0,
                              log_every_n_steps=50)
    in_hooks = total = 0.0
    for step in range(steps):
        sync(device)
        start, trainer.global_step = time.perf_counter(), step
        optimizer.zero_grad()
        loss = model.loss(*batch)["loss"]
        hook = time.perf_counter()
        if hasattr(guard, "on_before_backward"):
            guard.on_before_backward(trainer, model, loss)
        hooks = time.perf_counter() - hook
        loss.backward()
        sync(device)
        hook = time.perf_counter()
        guard.on_before_optimizer_step(trainer, model, optimizer)
        hooks += time.perf_counter() - hook
        optimizer.step()
        sync(device)
        hook = time.perf_counter()
        guard.on_train_batch_end(trainer, model, {"loss": loss}, batch, step)  # the old guard scanned weights here
        hooks += time.perf_counter() - hook
        if step >= warmup:
            in_hooks, total = in_hooks + hooks, total + time.perf_counter() - start
    return in_hooks / (total - in_hooks)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def old_guard(path: str) -> type:
    """`NonFiniteGuard` as defined in another copy of guard.py (imported as part of genlab.run_control)."""
    spec = importlib.util.spec_from_file_location("genlab.run_control._old_guard", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.NonFiniteGuard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--old", help="a guard.py whose NonFiniteGuard is measured too")
    parser.add_argument("--models", choices=["all", "mlp", "conv"], default="all")
    parser.add_argument("--hooks_only", action="store_true", help="only the in-loop timing of the hooks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    guards = {"off": lambda: None, "on": NonFiniteGuard,
              "on, gradients every step": lambda: NonFiniteGuard(gradients_every_n_steps=1)}
    if args.old:
        guards["old"] = old_guard(args.old)
    for name, (shape, make) in MODELS.items():
        if args.models != "all" and not name.lower().startswith({"mlp": "mlp", "conv": "course"}[args.models]):
            continue
        shares = {setting: hook_share(make, shape, guard, args.steps, args.warmup, args.device)
                  for setting, guard in guards.items() if setting != "off"}
        print(f"{name} on {args.device}, batch {BATCH}, {args.threads} thread(s), hooks: "
              + "; ".join(f"{setting} {share:+.2%} of the rest of the step" for setting, share in shares.items()),
              flush=True)
        if args.hooks_only:
            continue
        times: dict[str, list[float]] = {setting: [] for setting in guards}
        order = list(guards)
        for round_ in range(args.rounds):  # each round starts with another setting: no setting always runs first
            for setting in order[round_ % len(order):] + order[:round_ % len(order)]:
                times[setting].append(step_time(make, shape, guards[setting](), args.steps, args.warmup, args.device))
        line = [f"{name} on {args.device}, batch {BATCH}, {args.threads} thread(s): off {min(times['off']) * 1e3:.2f}"
                f" ms/step (best of {args.rounds})"]
        for setting in guards:
            if setting != "off":
                overhead = statistics.median((t - o) / o for t, o in zip(times[setting], times["off"]))
                line.append(f"{setting} {min(times[setting]) * 1e3:.2f} ms/step, overhead {overhead:+.1%} (median)")
        print("; ".join(line), flush=True)


if __name__ == "__main__":
    main()
