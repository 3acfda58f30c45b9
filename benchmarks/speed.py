"""Training speed of the course ConvVAE on SVHN-shaped data, three ways, in images per second (not a test).

  course   the course notebook: torchvision.datasets.SVHN + ToTensor + DataLoader + a plain PyTorch loop (torch's Adam)
  genlab   `Trainer.fit` with genlab's SVHN datamodule (the uint8 fast path) and the same model
  ceiling  the same forward/backward/Adam step on one pre-made batch, with genlab's Adam: no data loading at all

The model is genlab's `ConvVAE` preset, which is the course's: three stride-2 convs (32, 64, 128), latent 128,
Bernoulli likelihood, Adam 1e-3, batch 128. Each way runs in its own process, so its peak host memory (RSS) is its
own; on a GPU the peak CUDA memory is reported too. Runs on the CPU, and on the GPU (fp32 and bf16-mixed) when one is
present. Without SVHN's `train_32x32.mat` under --root, a synthetic file in SVHN's real format (random pixels) is
written first to --cache. Each way runs `--rounds` times, interleaved, and its best round counts (on a shared
machine the load changes between runs; `uptime`'s load average is printed before and after).

    python benchmarks/speed.py                     # CPU with 2 threads (+ GPU when present)
    python benchmarks/speed.py --steps 200 --device cuda

The last line reads `speed: genlab/course=<ratio> genlab/ceiling=<ratio>`, for the GPU in fp32 when one was
measured, else for the CPU.

`--case mlp` measures genlab's per-step overhead on a model whose steps take milliseconds: the IWAE paper's VAE (MLP
784-200-200-50, Bernoulli, Burda et al., 2016) on dynamically binarised MNIST (real files under --root, else
FakeImages of the same shape), 50,000 training images, batch 100, Adam 1e-3. Ways: `loop` (a bare PyTorch loop over
the same batches calling `VAE.loss`, with genlab's Adam (fused on a CPU), plus one validation pass), `fit` (`genlab
fit` defaults) and `fit_nofig` (`--figures false`); on a GPU in fp32 and bf16-mixed (`--on-device`:
`--data.on_device true`). pythae's trainer is in `benchmarks/pythae_compare.py`. Each fits `--steps` steps, timed
from `--warmup` on, and one full validation pass; seconds per epoch = 500 x seconds per step + the epoch's end
(validation, and for `fit` figures and checkpoints). `--profile` adds a per-step table of where a fit's time goes
(Lightning's SimpleProfiler, and the model's `loss` vs its logging).

    python benchmarks/speed.py --case mlp --threads 1 --steps 200 --rounds 3 --device cpu
    python benchmarks/speed.py --case mlp --device cuda --on-device
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # genlab from this checkout, installed or not

from speed_conv import BATCH, LR, SVHN_FILE, ceiling, course, genlab_fit, svhn_root  # noqa: E402
from timing import current_rss_mb, fit_clock, plain_loop, report, rss_mb, run_child, sync, timed  # noqa: E402


MLP_BATCH, MLP_TRAIN = 100, 50_000  # the IWAE paper's batch and training-set size
MLP_MODEL = ["--model", "VAE", "--model.latent_dim", "50", "--model.hidden", "[200, 200]", "--model.lr", "0.001"]


def device_configs(device: str) -> list[tuple[str, str]]:
    """(device, precision) pairs to run: the CPU in fp32, and a GPU in fp32 and bf16 when asked for or present."""
    configs = [("cpu", "fp32")] if device in ("auto", "cpu") else []
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        configs += [("cuda", "fp32"), ("cuda", "bf16")]
    return configs


def mlp_data_args(root: Path | None) -> list[str]:
    """`genlab fit` arguments of the MLP case's data: binarised MNIST from `root`, else FakeImages (1, 28, 28)."""
    common = ["--data.batch_size", str(MLP_BATCH), "--data.val_fraction", str(1 / 6), "--data.seed", "0"]
    if root is not None and (root / "MNIST" / "raw").is_dir():
        return ["--data", "MNIST", "--data.root", str(root), "--data.binarize", "true", *common]
    return ["--data", "FakeImages", "--data.size", str(MLP_TRAIN * 6 // 5), *common]


def mlp_loop(root: Path | None, steps: int, warmup: int, device: str, bf16: bool) -> tuple[float, float]:
    """(seconds per step, seconds of one validation pass) of a bare loop over the datamodule's batches."""
    from genlab.cli import main as genlab_main
    cli = genlab_main([*MLP_MODEL, *mlp_data_args(root)], run=False)
    data, model = cli.datamodule, cli.model
    data.setup("fit")
    torch.manual_seed(0)
    loader = data.train_dataloader()  # outside a Trainer: float batches, freshly binarised

    def forever():
        while True:
            yield from loader
    seconds = plain_loop(model.to(device), forever(), device, steps, warmup, bf16, LR) / (steps - warmup)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
        for x, y in data.val_dataloader():
            model.loss(x.to(device), y)
    sync(device)
    return seconds, time.perf_counter() - start


def mlp_fit(root: Path | None, steps: int, warmup: int, extra: list[str], profile: bool) -> dict:
    """`genlab fit` for one epoch of `steps` training steps; the time per step and the epoch's end."""
    from genlab import cli
    clock, model_timer = fit_clock(warmup, "cuda" if "gpu" in extra else "cpu"), {}
    before_fit = cli.GenlabCLI.before_fit

    def with_clock(self):
        before_fit(self)
        self.trainer.callbacks.append(clock)
        if profile:  # the model's own share of training_step: its loss vs its logging
            for name, key in (("loss", "loss"), ("_objective", "loss"), ("log", "log"), ("log_dict", "log")):
                if hasattr(self.model, name):
                    setattr(self.model, name, timed(getattr(self.model, name), model_timer, lambda key=key: (
                        f"[model] {key} ({'training' if self.model.training else 'evaluation'})")))
    cli.GenlabCLI.before_fit = with_clock
    with tempfile.TemporaryDirectory() as folder:
        args = ["fit", *MLP_MODEL, *mlp_data_args(root), "--trainer.max_epochs", "1",
                "--trainer.limit_train_batches", str(steps), "--trainer.default_root_dir", folder,
                "--trainer.enable_progress_bar", "false", "--seed_everything", "0", *extra]
        if profile:
            args += ["--trainer.profiler", "simple"]
        done = cli.main(args)
    result = {"step_s": clock.step_s, "end_s": clock.end_s}
    if profile:
        durations = {**done.trainer.profiler.recorded_durations, **model_timer}
        result["profile"] = {action: (sum(seconds), len(seconds)) for action, seconds in durations.items()}
    return result


def run_mlp_way(args) -> dict:
    root = Path(args.data) if args.data else None
    if args.way == "loop":
        step_s, end_s = mlp_loop(root, args.steps, args.warmup, args.device, args.precision == "bf16")
        return {"step_s": step_s, "end_s": end_s}
    extra = ["--figures", "false"] if args.way == "fit_nofig" else []
    if args.device == "cuda":
        extra += ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]
        extra += ["--trainer.precision", "bf16-mixed"] if args.precision == "bf16" else []
        extra += ["--data.on_device", "true"] if args.on_device else []
    return mlp_fit(root, args.steps, args.warmup, extra, args.profile)


def main_mlp(args) -> None:
    steps_per_epoch = MLP_TRAIN // MLP_BATCH
    ways = ["loop", "fit", "fit_nofig"]
    print(f"MLP VAE 784-200-200-50 on {mlp_data_args(args.root)[1]} (1, 28, 28), batch {MLP_BATCH}; {args.steps} "
          f"steps ({args.warmup} warm-up) per run; CPU threads {args.threads}; load: {os.getloadavg()}; pythae: "
          f"see benchmarks/pythae_compare.py")
    for device, precision in device_configs(args.device):
        rounds = [{way: measure(args, way, device, precision, args.root or "") for way in ways}
                  for _ in range(args.rounds)]
        epoch = {way: [steps_per_epoch * r[way]["step_s"] + r[way]["end_s"] for r in rounds] for way in ways}
        for way in ways if rounds else []:
            best = min(rounds, key=lambda r: r[way]["step_s"])[way]
            print(f"{device} {precision} {way:9s} s/epoch per round: {' '.join(f'{e:.2f}' for e in epoch[way])}; "
                  f"best step {best['step_s'] * 1e3:.2f} ms, epoch end {best['end_s']:.2f} s")
        median = {way: statistics.median(epoch[way]) for way in ways if rounds}
        if rounds:
            print(f"{device} {precision} ratios of median s/epoch: " + ", ".join(
                f"{way}/loop={median[way] / median['loop']:.2f}" for way in ways[1:]))
    if args.profile:
        args.way, args.steps = "fit", max(args.steps, 100)
        profile = measure(args, "fit", "cpu", "fp32", args.root or "", ["--profile"])["profile"]
        print(f"profile of `genlab fit` ({args.steps} training steps, then validation; SimpleProfiler, and the "
              f"model's loss and log calls; ms per training step = total / {args.steps}):")
        print(f"  {'ms/step':>8s} {'calls':>6s} {'ms/call':>8s}  action")
        for action, (seconds, calls) in sorted(profile.items(), key=lambda item: -item[1][0])[:args.profile_rows]:
            print(f"  {seconds * 1e3 / args.steps:8.3f} {calls:6d} {seconds * 1e3 / calls:8.3f}  {action}")


def run_way(args) -> None:
    """Child process: one way on one device; prints a JSON line."""
    torch.set_num_threads(args.threads)
    if args.case == "mlp":
        report(run_mlp_way(args))
        return
    root, bf16 = Path(args.data), args.precision == "bf16"
    base = current_rss_mb()
    if args.way == "course":
        seconds = course(root, args.device, args.steps, args.warmup, bf16, args.workers)
    elif args.way == "genlab":
        seconds = genlab_fit(root, args.device, args.steps, args.warmup, bf16, args.on_device)
    else:
        seconds = ceiling(args.device, args.steps, args.warmup, bf16)
    result = {"images_per_s": (args.steps - args.warmup) * BATCH / seconds, "peak_rss_mb": rss_mb(),
              "start_rss_mb": base}
    if args.device.startswith("cuda"):
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    report(result)


def measure(args, way: str, device: str, precision: str, data: Path | str, extra: tuple = ()) -> dict:
    command = [sys.executable, __file__, "--way", way, "--device", device, "--precision", precision,
               "--data", str(data), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--workers", str(args.workers), "--case", args.case, *extra]
    if args.on_device:
        command.append("--on-device")
    return run_child(command, f"{way} on {device}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=os.environ.get("GENLAB_DATA"), help="folder with SVHN's .mat")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "genlab-speed")
    parser.add_argument("--num-images", type=int, default=73257, help="size of a synthetic file (SVHN's train)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU runs)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the best of each way counts")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the course loop")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--on-device", action="store_true", help="genlab keeps the uint8 split on the GPU")
    parser.add_argument("--case", choices=["conv", "mlp"], default="conv",
                        help="conv: the course ConvVAE on SVHN-shaped data; mlp: the IWAE VAE on binarised MNIST")
    parser.add_argument("--profile", action="store_true", help="mlp: add a per-step profile of `genlab fit`")
    parser.add_argument("--profile-rows", type=int, default=15, help="rows of that profile to print")
    parser.add_argument("--way", choices=["course", "genlab", "ceiling", "loop", "fit", "fit_nofig"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:
        return run_way(args)
    if args.case == "mlp":
        return main_mlp(args)

    data = svhn_root(args.root, args.cache, args.num_images)
    from scipy.io import whosmat
    n_images = dict((name, shape) for name, shape, _ in whosmat(data / SVHN_FILE))["X"][3]
    dataset_mb = n_images * 3 * 32 * 32 / 2**20
    configs = device_configs(args.device)
    print(f"SVHN-shaped data: {n_images} images, uint8 {dataset_mb:.0f} MB ({data / SVHN_FILE}); batch {BATCH}, "
          f"{args.steps} steps ({args.warmup} warm-up); CPU threads {args.threads}; load: {os.getloadavg()}")
    last = None
    for device, precision in configs:
        # Rounds interleave the ways and keep each way's best: on a shared machine, load comes and goes.
        rounds = [{way: measure(args, way, device, precision, data) for way in ("course", "genlab", "ceiling")}
                  for _ in range(args.rounds)]
        results = {way: max((r[way] for r in rounds), key=lambda r: r["images_per_s"]) for way in rounds[0]}
        if args.rounds > 1:
            print(f"{device:4s} {precision}  images/s per round: " + "; ".join(
                f"{way} " + " ".join(f"{r[way]['images_per_s']:.0f}" for r in rounds) for way in results))
        for way, r in results.items():
            memory = f"peak RSS {r['peak_rss_mb']:.0f} MB (start {r['start_rss_mb']:.0f} MB)"
            if "cuda_peak_mb" in r:
                memory += f", CUDA peak {r['cuda_peak_mb']:.0f} MB"
            print(f"{device:4s} {precision}  {way:8s} {r['images_per_s']:9.0f} images/s   {memory}")
        b_a = results["genlab"]["images_per_s"] / results["course"]["images_per_s"]
        b_c = results["genlab"]["images_per_s"] / results["ceiling"]["images_per_s"]
        extra = results["genlab"]["peak_rss_mb"] - results["ceiling"]["peak_rss_mb"]
        print(f"{device:4s} {precision}  genlab/course={b_a:.2f} genlab/ceiling={b_c:.2f}; genlab's host memory "
              f"beyond the ceiling run: {extra:.0f} MB = {extra / dataset_mb:.2f}x the uint8 dataset")
        if last is None or (device, precision) == ("cuda", "fp32"):
            last = (b_a, b_c)
    print(f"load average after: {os.getloadavg()}")
    print(f"speed: genlab/course={last[0]:.2f} genlab/ceiling={last[1]:.2f}")


if __name__ == "__main__":
    main()
