"""RealNVP as an image flow: exact-likelihood training on dequantised 8-bit MNIST (or the CIFAR-10 batches present)
for a CPU budget, test bits/dim, and a titled samples figure (not a test).

The test score is `genlab.metrics.evaluate_likelihood` with `dequantized=True`: -log p of uniformly dequantised
test images plus D log 256, an upper bound on -log P of the 8-bit data, in bits per dimension. CIFAR-10: the last
`--test-images` of the training batches present are held out (the shared copy has one batch, no test batch).

    python benchmarks/realnvp_images.py --data MNIST --budget-seconds 300 \
        --figure docs/figures/mnist_realnvp_samples.png
"""

import argparse
import math
import time

import torch

from genlab.datamodules import CIFAR10, MNIST
from genlab.figures.draw import panel_figure, show_grid
from genlab.metrics import evaluate_likelihood
from genlab.models import RealNVP


def load(name: str, root: str, test_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) images in [0, 1] on the 8-bit grid."""
    if name == "MNIST":
        data = MNIST(root=root)
        train, test = data.load_split("train")[0], data.load_split("test")[0][:test_images]
    else:
        images = CIFAR10(root=root, verify=False).load_split("train")[0]
        train, test = images[:-test_images], images[-test_images:]
    return train.float() / 255, test.float() / 255


def train(model: RealNVP, images: torch.Tensor, budget: float, batch_size: int, seed: int) -> tuple[float, int]:
    """Adam on the dequantised negative log-likelihood for `budget` CPU seconds; (CPU seconds, steps)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = model.configure_optimizers()
    model.train()
    start, steps = time.process_time(), 0
    while True:
        for index in torch.randperm(len(images), generator=generator).split(batch_size):
            loss = model.loss(images[index])["loss"]
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
            optimizer.step()
            steps += 1
            if time.process_time() - start >= budget:
                return time.process_time() - start, steps


def save_samples(model: RealNVP, path: str, title: str, seed: int) -> None:
    """An 8x8 grid of samples at temperature 1 beside one at 0.7, titled (genlab's own grid drawing)."""
    fig, axes = panel_figure(2, 5.0, 5.3)
    for axis, temperature in zip(axes, (1.0, 0.7)):
        images = model.sample(64, generator=torch.Generator().manual_seed(seed), temperature=temperature)
        show_grid(axis, images, 8, title=f"temperature {temperature}")
    fig.suptitle(title)
    fig.savefig(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["MNIST", "CIFAR10"], default="MNIST")
    parser.add_argument("--root", default="../shared/data")
    parser.add_argument("--budget-seconds", type=float, default=300.0, help="CPU seconds of training")
    parser.add_argument("--num-scales", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--num-blocks", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--figure", default=None, help="PNG path for the samples figure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    train_images, test_images = load(args.data, args.root, args.test_images)
    model = RealNVP(image_shape=tuple(train_images.shape[1:]), num_scales=args.num_scales, hidden=args.hidden,
                    num_blocks=args.num_blocks)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"RealNVP on {args.data}: {parameters:,} parameters, {dict(model.hparams)}", flush=True)
    seconds, steps = train(model, train_images, args.budget_seconds, args.batch_size, args.seed)
    model.eval()
    batches = [(x, torch.zeros(len(x), dtype=torch.long)) for x in test_images.split(100)]
    with torch.no_grad():
        result = evaluate_likelihood(model, batches, dequantized=True, seed=args.seed)
    bpd = result["exact_bpd"]  # includes D log 256: a bound on -log P of the 8-bit images
    row = {"data": args.data, "parameters": parameters, "steps": steps, "train_s": seconds,
           "train_images": len(train_images), "test_images": len(test_images), "bpd": bpd,
           "nll_8bit": bpd * math.prod(train_images.shape[1:]) * math.log(2)}
    print(row)
    if args.figure:
        save_samples(model, args.figure, f"RealNVP on {args.data} (8-bit, dequantised): {steps} steps, "
                                         f"{seconds:.0f} CPU s, test {bpd:.2f} bits/dim", args.seed)
    return row


if __name__ == "__main__":
    main()
