"""genlab fit vs pythae's BaseTrainer vs a bare PyTorch loop on the same VAE: training speed and final test NLL.

The model is the IWAE paper's VAE (MLP 784-200-200-50, Bernoulli, Burda et al., 2016), built by genlab from the same
arguments and `--seed_everything`, so all three ways start from the same weights (each run prints a checksum of
them). Data: dynamically binarised MNIST from --root, 50,000 training images (genlab's split with val_fraction 1/6,
data seed 0), batch 100, Adam 1e-3, one CPU thread. Ways, each in its own process:

- `fit`: `genlab fit` with its defaults (figures, guard, validation every epoch, checkpoints).
- `pythae`: pythae's `BaseTrainer` training a pythae `VAE` whose encoder and decoder are genlab's modules (the same
  parameters); binarisation per batch in its forward, no evaluation set.
- `loop`: a loop as one writes it: a shuffled `DataLoader` over the grey levels, a fresh `torch.bernoulli` per
  batch, `VAE.loss`, torch's default Adam. (genlab draws its binarisation as U < p and steps a fused Adam on a CPU.)

Training images/s counts the training steps only (first batch to last batch of each epoch); `wall s` is the whole
run (data, validation, figures, saving). After training, `genlab.metrics.evaluate_likelihood` scores the first
--test-images test images (fixed binarisation) with k = --iwae-k importance samples: `neg_elbo` and `iwae_nll`.
Without pythae installed its way is skipped with one line.

    python benchmarks/pythae_compare.py --root $GENLAB_SHARED_DATA --epochs 1 --seeds 0 --rounds 2 --no-eval
    python benchmarks/pythae_compare.py --root $GENLAB_SHARED_DATA --epochs 10 --seeds 0 1 2 3 4 5
"""

import argparse
import importlib.util
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # genlab from this checkout, installed or not

from timing import report, run_child  # noqa: E402

BATCH, LR, TRAIN = 100, 1e-3, 50_000
MODEL = ["--model", "VAE", "--model.latent_dim", "50", "--model.hidden", "[200, 200]", "--model.lr", str(LR)]


def data_args(root: str) -> list[str]:
    return ["--data", "MNIST", "--data.root", root, "--data.binarize", "true", "--data.batch_size", str(BATCH),
            "--data.val_fraction", str(1 / 6), "--data.seed", "0"]


def checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


class EpochClock:
    """Seconds from each epoch's first training batch to its last (`begin` / `end`), summed with the images seen."""

    def __init__(self) -> None:
        self.seconds, self.images, self.start = 0.0, 0, None

    def begin(self) -> None:
        self.start = time.perf_counter()

    def end(self, images: int) -> None:
        self.seconds += time.perf_counter() - self.start
        self.images += images


def build(root: str, seed: int):
    """genlab's model (seeded as `genlab fit` seeds it) and its datamodule, set up for fit and test."""
    from genlab.cli import main as genlab_main
    cli = genlab_main([*MODEL, *data_args(root), "--seed_everything", str(seed)], run=False)
    cli.datamodule.setup("fit")
    return cli.model, cli.datamodule


def train_grey(data) -> torch.Tensor:
    """The training split's grey levels in [0, 1] (N, 1, 28, 28), genlab's split."""
    dataset = data.dataset("train")
    images = dataset.source if dataset.rows is None else dataset.source[dataset.rows]
    return images.float() / 255


def run_fit(args) -> tuple[torch.nn.Module, object, dict]:
    from lightning import Callback

    from genlab import cli
    clock = EpochClock()

    class Clock(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                clock.begin()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.is_last_batch:
                clock.end(TRAIN)

    before_fit, start = cli.GenlabCLI.before_fit, {}

    def with_clock(self):
        before_fit(self)
        self.trainer.callbacks.append(Clock())
        start["checksum"] = checksum(self.model)
    cli.GenlabCLI.before_fit = with_clock
    with tempfile.TemporaryDirectory() as folder:
        done = cli.main(["fit", *MODEL, *data_args(args.root), "--trainer.max_epochs", str(args.epochs),
                         "--trainer.default_root_dir", folder, "--trainer.enable_progress_bar", "false",
                         "--seed_everything", str(args.seed)])
    return done.model, done.datamodule, {"train_s": clock.seconds, "images": clock.images, **start}


def run_loop(args) -> tuple[torch.nn.Module, object, dict]:
    model, data = build(args.root, args.seed)
    start = {"checksum": checksum(model)}
    grey = train_grey(data)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(grey), batch_size=BATCH, shuffle=True,
                                         generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    clock = EpochClock()
    for _ in range(args.epochs):
        clock.begin()
        for (x,) in loader:
            loss = model.loss(torch.bernoulli(x))["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        clock.end(len(grey))
    return model, data, {"train_s": clock.seconds, "images": clock.images, **start}


def run_pythae(args) -> tuple[torch.nn.Module, object, dict]:
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    from genlab.models.bottlenecks import LOG_VAR_RANGE
    model, data = build(args.root, args.seed)
    start = {"checksum": checksum(model)}

    class Encoder(BaseEncoder):  # genlab's encoder: h = (mean, log variance)
        def __init__(self):
            super().__init__()
            self.net = model.encoder

        def forward(self, x):
            mean, log_var = self.net(x).chunk(2, dim=-1)
            return ModelOutput(embedding=mean, log_covariance=log_var.clamp(*LOG_VAR_RANGE))

    class Decoder(BaseDecoder):  # genlab's decoder: Bernoulli logits -> probabilities, as pythae's "bce" expects
        def __init__(self):
            super().__init__()
            self.net = model.decoder

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    class BinarizingVAE(VAE):
        def forward(self, inputs, **kwargs):
            if self.training:  # dynamic binarisation: a fresh draw per batch
                inputs = {"data": torch.bernoulli(inputs["data"])}
            return super().forward(inputs, **kwargs)

    clock = EpochClock()

    class Clock(TrainingCallback):
        def on_epoch_begin(self, training_config, **kwargs):
            clock.begin()

        def on_epoch_end(self, training_config, **kwargs):
            clock.end(TRAIN)

    grey = train_grey(data)
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=50, reconstruction_loss="bce")
    vae = BinarizingVAE(config, encoder=Encoder(), decoder=Decoder())
    with tempfile.TemporaryDirectory() as folder:
        training = BaseTrainerConfig(output_dir=folder, learning_rate=LR, per_device_train_batch_size=BATCH,
                                     num_epochs=args.epochs, optimizer_cls="Adam", no_cuda=True)
        trainer = BaseTrainer(vae, BaseDataset(grey, torch.zeros(len(grey))), training_config=training,
                              callbacks=[Clock()])
        trainer.train()
    return model, data, {"train_s": clock.seconds, "images": clock.images, **start}


def child(args) -> None:
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    model, data, result = {"fit": run_fit, "loop": run_loop, "pythae": run_pythae}[args.way](args)
    result["wall_s"] = time.perf_counter() - began
    result["trained_checksum"] = checksum(model)
    if not args.no_eval:
        from genlab.metrics import evaluate_likelihood
        data.setup("test")
        model.eval()
        scores = evaluate_likelihood(model, data.test_dataloader(), num_samples=args.iwae_k,
                                     max_images=args.test_images)
        result.update(neg_elbo=scores["neg_elbo"], iwae_nll=scores["iwae_nll"])
    report(result)


def mean_se(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:+.3f} (one seed)"
    return f"{statistics.mean(values):+.3f} +- {statistics.stdev(values) / math.sqrt(len(values)):.3f}"


def main(args) -> None:
    ways = [way for way in args.ways if way != "pythae" or importlib.util.find_spec("pythae")]
    if len(ways) < len(args.ways):
        print("pythae is not installed: its way is skipped")
    if not ways:
        return
    print(f"MLP VAE 784-200-200-50, binarised MNIST from {args.root}, {TRAIN} training images, batch {BATCH}, "
          f"Adam {LR}; {args.epochs} epoch(s); seeds {args.seeds}; rounds {args.rounds}; threads {args.threads}; "
          f"ways {ways}; IWAE k={args.iwae_k} on {args.test_images} test images; load {os.getloadavg()}")
    results: dict[tuple[str, int], list[dict]] = {}
    for seed in args.seeds:
        for _ in range(args.rounds):
            for way in ways:  # interleaved: a drift in the machine's load hits every way alike
                command = [sys.executable, __file__, "--child", "--way", way, "--seed", str(seed),
                           "--epochs", str(args.epochs), "--root", args.root, "--threads", str(args.threads),
                           "--iwae-k", str(args.iwae_k), "--test-images", str(args.test_images)]
                result = run_child(command + (["--no-eval"] if args.no_eval else []), f"{way} seed {seed}")
                results.setdefault((way, seed), []).append(result)
                scores = "" if args.no_eval else f"; -ELBO {result['neg_elbo']:.3f}, IWAE {result['iwae_nll']:.3f}"
                print(f"{way:6s} seed {seed}: {result['images'] / result['train_s']:7.0f} training images/s, wall "
                      f"{result['wall_s']:6.1f} s, init checksum {result['checksum']:.4f}{scores}", flush=True)
    for way in ways:
        rates = [r["images"] / r["train_s"] for runs in (results[(way, s)] for s in args.seeds) for r in runs]
        print(f"{way:6s} median training images/s {statistics.median(rates):7.0f} over {len(rates)} run(s)")
    if args.no_eval:
        return
    final = {key: runs[-1] for key, runs in results.items()}
    for metric in ("neg_elbo", "iwae_nll"):
        for way in ways:
            print(f"{metric:8s} {way:6s} mean {statistics.mean(final[(way, s)][metric] for s in args.seeds):.3f}")
        for i, a in enumerate(ways):
            for b in ways[i + 1:]:
                gaps = [final[(a, s)][metric] - final[(b, s)][metric] for s in args.seeds]
                print(f"{metric:8s} {a} - {b}: {mean_se(gaps)} nats (paired over {len(gaps)} seeds)")


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=os.environ.get("GENLAB_SHARED_DATA", "data"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=1, help="runs of each way per seed (for timing)")
    parser.add_argument("--ways", nargs="+", default=["fit", "pythae", "loop"], choices=["fit", "pythae", "loop"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iwae-k", type=int, default=1000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--no-eval", action="store_true", help="time only: skip the test-set likelihoods")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--way", default="fit", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    child(arguments) if arguments.child else main(arguments)
