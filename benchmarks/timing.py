"""Timing helpers the benchmarks share: device syncs, host memory, a plain training loop, a Lightning step clock and
the one-way-per-process protocol (a child prints `RESULT <json>`). Not a test."""

import json
import os
import resource
import subprocess
import time

import torch


def sync(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so a clock read afterwards includes it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def rss_mb() -> float:
    """Peak resident host memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def plain_loop(model, batches, device: str, steps: int, warmup: int, bf16: bool, lr: float = 1e-3,
               optimizer=None) -> float:
    """Seconds for `steps - warmup` steps of forward/backward/Adam over `batches` (an iterator of (x, y)). The
    optimiser is genlab's Adam (`genlab.models.module.adam`: fused on a CPU), so that a loop and `genlab fit` do the
    same work, unless `optimizer` (a class such as `torch.optim.Adam`) is given."""
    from genlab.models.module import adam
    optimizer = (optimizer or adam)(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        x, _ = next(batches)
        x = x.to(device, non_blocking=True)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(x)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return time.perf_counter() - start


def fit_clock(warmup: int, device: str = "cpu"):
    """A Lightning callback timing a fit from global step `warmup` on: `seconds` (to the end of training), `step_s`
    (per training step) and `end_s` (after the last step: validation, figures, checkpoints)."""
    from lightning import Callback

    class FitClock(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == warmup:
                sync(device)
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.steps, self.last = trainer.global_step - warmup, time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            sync(device)
            end = time.perf_counter()
            self.seconds, self.end_s = end - self.start, end - self.last
            self.step_s = (self.last - self.start) / self.steps
    return FitClock()


def timed(function, record: dict[str, list[float]], name):
    """`function`, adding the seconds of each call to `record[name()]` (`name` is read after the call)."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            record.setdefault(name(), []).append(time.perf_counter() - start)
    return wrapper


def run_child(command: list[str], what: str) -> dict:
    """Run a benchmark child process and return the JSON of its last `RESULT ` line."""
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def report(result: dict) -> None:
    """What a child prints for `run_child`."""
    print("RESULT " + json.dumps(result))
