"""Two parts of a small model's training step, each timed alone (not a test): Adam's update and the dynamic
binarisation of a batch, torch's defaults against what genlab does.

The model is the IWAE paper's VAE (784-200-200-50) at batch 100 on one CPU thread:
  adam      `torch.optim.Adam` (on a CPU: one Python-dispatched update per tensor) vs `genlab.models.module.adam`
            (the fused kernel on a CPU)
  binarise  `torch.bernoulli(x / 255)` vs `genlab.datamodules.mnist.binarize` (U < p) on a uint8 batch (100, 1, 28, 28)
Printed: milliseconds per call, the best of --rounds interleaved rounds of --calls calls.

    python benchmarks/step_parts.py
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # genlab from this checkout, installed or not

from genlab.datamodules.mnist import binarize  # noqa: E402
from genlab.models import VAE  # noqa: E402
from genlab.models.module import adam  # noqa: E402


def per_call_ms(call, calls: int) -> float:
    for _ in range(min(calls, 20)):
        call()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = VAE((1, 28, 28), latent_dim=50, hidden=(200, 200))
    model.loss(torch.rand(100, 1, 28, 28).round())["loss"].backward()  # gradients for the optimisers to apply
    grey = torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8)
    ways = {
        "adam: torch.optim.Adam": torch.optim.Adam(model.parameters(), lr=1e-3).step,
        "adam: genlab adam (fused)": adam(model.parameters(), lr=1e-3).step,
        "binarise: torch.bernoulli": lambda: torch.bernoulli(grey.float() / 255),
        "binarise: genlab binarize": lambda: binarize(grey.float() / 255),
    }
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(args.rounds):  # interleaved: a change in the machine's load hits every way alike
        for name, call in ways.items():
            best[name] = min(best[name], per_call_ms(call, args.calls))
    for name, ms in best.items():
        print(f"{name:28s} {ms:.3f} ms per call")


if __name__ == "__main__":
    main()
