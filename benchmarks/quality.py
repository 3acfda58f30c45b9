"""Test log-likelihood on dynamically binarised MNIST: VAE vs a RealNVP prior, planar flows, IAF and a hierarchical VAE,
against the papers (not a test).

The model is the IWAE paper's one-stochastic-layer VAE (Burda et al., 2016): 784 -> 200 -> 200 -> 50 latents, and
the mirror decoder, Bernoulli likelihood; genlab's `VAE` and `FlowVAE` presets with hidden=(200, 200),
latent_dim=50 (ReLU between layers: the papers used tanh, the presets have no activation switch). Training
images are re-binarised on every epoch (Bernoulli draws of the grey levels); the test images are one seeded draw.
"RealNVP prior" is the same VAE with `prior="realnvp"`; "HVAE" is `HierarchicalVAE` (`HVAE` below: dense groups on
a 1x1 map, i.e. an MLP ladder), trained with its gradient clipping, update skipping and EMA weights and a
free-bits floor of 0.5 nats per latent dimension on each group's KL (its training objective; the -ELBO and -log p(x)
reported are the model's true ones, without the floor).
Each model is evaluated with k importance samples (`genlab.metrics.evaluate_likelihood`; 5000 in the papers).
`--budget-seconds` trains every model for the same CPU time of this process (one thread; robust to other load on
a shared machine) instead of a number of epochs.

    python benchmarks/quality.py --root ../shared/data                         # paper setting: long on a CPU
    python benchmarks/quality.py --root ../shared/data --epochs 1 --k 100 --test-images 1000 --flows 10
    python benchmarks/quality.py --budget-seconds 300 --models VAE "RealNVP prior" HVAE --flows --iaf

Paper anchors in nats, each printed beside the quantity of its kind: the estimate of -log p(x) of a VAE trained
on the ELBO (k=1), 86.76 with k=5000 (Burda et al., 2016), beside our `iwae_nll`; the variational bounds -ELBO of
Rezende & Mohamed (2015), <= 89.9 for their diagonal-Gaussian DLGM and <= 87.5 / <= 85.1 with K=10 / K=80 planar
flows, beside our `neg_elbo`.
"""

import argparse
import time

import torch

from genlab.datamodules import MNIST
from genlab.metrics import evaluate_likelihood
from genlab.models import VAE, FlowVAE, HierarchicalVAE
from genlab.models.module import adam

ESTIMATES = {"VAE": "86.76 (Burda)"}  # -log p(x) by importance sampling, k=5000
BOUNDS = {"VAE": "<=89.9 (R&M)", "planar K=10": "<=87.5 (R&M)", "planar K=80": "<=85.1 (R&M)"}  # -ELBO
ARCHITECTURE = dict(image_shape=(1, 28, 28), latent_dim=50, hidden=(200, 200))
HVAE = dict(image_shape=(1, 28, 28), resolutions=(1, 1, 1), latent_channels=16, width=256, free_bits=0.5)
MODELS = ("VAE", "RealNVP prior", "HVAE")


def build(name: str) -> torch.nn.Module:
    """"VAE", "RealNVP prior", "HVAE", "planar K=<n>" or "IAF K=<n>" with the IWAE paper's layer sizes."""
    if name in ("VAE", "RealNVP prior"):
        return VAE(**ARCHITECTURE, prior="normal" if name == "VAE" else "realnvp")
    if name == "HVAE":
        return HierarchicalVAE(**HVAE)
    flow, steps = name.split(" K=")
    return FlowVAE(**ARCHITECTURE, flow=flow.lower(), num_flows=int(steps))


def load(root: str, split: str, limit: int | None) -> torch.Tensor:
    """Grey MNIST images in [0, 1], (N, 1, 28, 28), the first `limit` of `split`."""
    images, _ = MNIST(root=root).load_split(split)
    return images[:limit].float() / 255


def train(model: torch.nn.Module, grey: torch.Tensor, epochs: int, batch_size: int, lr: float, seed: int,
          budget: float | None = None) -> tuple[float, int]:
    """genlab's Adam on the model's `loss` (the negative ELBO; the HVAE's with its free-bits floor), fresh binarisation
    every epoch, for `epochs` or until `budget` CPU seconds of this process are spent; (CPU seconds, optimiser steps).
    A model with `clip_gradients_or_skip` (HierarchicalVAE) gets its clipping, skipping and EMA as under Lightning."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = adam([p for p in model.parameters() if p.requires_grad], lr=lr)  # genlab's: fused on a CPU
    guarded = hasattr(model, "clip_gradients_or_skip")
    model.train()
    start, steps = time.process_time(), 0
    for _ in range(epochs if budget is None else 10 ** 9):
        binary = torch.bernoulli(grey, generator=generator)
        for index in torch.randperm(len(grey), generator=generator).split(batch_size):
            loss = model.loss(binary[index])["loss"]
            optimizer.zero_grad()
            loss.backward()
            if not guarded:
                optimizer.step()
            elif not model.clip_gradients_or_skip(steps)[1]:
                optimizer.step()
                model.update_ema(steps)
            steps += 1
            if budget is not None and time.process_time() - start >= budget:
                return time.process_time() - start, steps
    return time.process_time() - start, steps


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data", help="folder holding MNIST/raw")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="train each model for this many CPU seconds instead of --epochs")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS, help="models besides the flows")
    parser.add_argument("--k", type=int, default=5000, help="importance samples per test image")
    parser.add_argument("--test-images", type=int, default=None, help="first N test images (default: all 10000)")
    parser.add_argument("--train-images", type=int, default=None, help="first N training images (default: all)")
    parser.add_argument("--flows", type=int, nargs="*", default=[10, 80], help="planar flow lengths K")
    parser.add_argument("--iaf", type=int, nargs="*", default=[2], help="IAF lengths (none: skip IAF)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--chunk-size", type=int, default=100, help="importance samples per batch (memory)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    train_grey = load(args.root, "train", args.train_images)
    test_grey = load(args.root, "test", args.test_images)
    test = torch.bernoulli(test_grey, generator=torch.Generator().manual_seed(args.seed + 2))  # one fixed draw
    batches = [(x, torch.zeros(len(x), dtype=torch.long)) for x in test.split(100)]
    names = [*args.models, *(f"planar K={k}" for k in args.flows), *(f"IAF K={k}" for k in args.iaf)]
    rows = []
    for name in names:
        torch.manual_seed(args.seed)
        model = build(name)
        parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"{name}: {parameters:,} trained parameters, {dict(model.hparams)}", flush=True)
        seconds, steps = train(model, train_grey, args.epochs, args.batch_size, args.lr, args.seed,
                               args.budget_seconds)
        model.eval()
        start = time.perf_counter()
        result = evaluate_likelihood(model, batches, args.k, args.chunk_size, seed=args.seed)
        rows.append({"model": name, "epochs": steps * args.batch_size / len(train_grey), "steps": steps,
                     "parameters": parameters, "k": args.k, "test_images": len(test),
                     "nll": result["iwae_nll"], "neg_elbo": result["neg_elbo"], "train_s": seconds,
                     "eval_s": time.perf_counter() - start, "paper_nll": ESTIMATES.get(name, "-"),
                     "paper_neg_elbo": BOUNDS.get(name, "-")})
        print(f"done: {name}: {steps} steps, -ELBO {result['neg_elbo']:.2f}, -log p(x) {result['iwae_nll']:.2f}",
              flush=True)
    print(f"\nMNIST, dynamic binarisation, {len(train_grey)} training images, -log p(x) in nats "
          f"(IWAE estimate, k={args.k}, first {len(test)} test images)")
    print(f"{'model':<14}{'params':>9}{'steps':>7}{'epochs':>7}{'-log p(x)':>11}{'paper':>15}{'-ELBO':>9}"
          f"{'paper bound':>15}{'train s':>9}{'eval s':>8}")
    for row in rows:
        print(f"{row['model']:<14}{row['parameters']:>9,}{row['steps']:>7}{row['epochs']:>7.1f}{row['nll']:>11.2f}"
              f"{row['paper_nll']:>15}{row['neg_elbo']:>9.2f}{row['paper_neg_elbo']:>15}{row['train_s']:>9.0f}"
              f"{row['eval_s']:>8.0f}")
    return rows


if __name__ == "__main__":
    main()
