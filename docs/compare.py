"""Numbers and side-by-side figures for docs/experiments.md, from finished runs (TensorBoard events, checkpoints).

    python docs/compare.py summary RUN_DIR...                        # final val metrics, epochs, time per epoch
    python docs/compare.py curves --tag val/loss val/kl --out a.png NAME=RUN_DIR...
    python docs/compare.py samples --out b.png NAME=CKPT:genlab.models.X...
    python docs/compare.py latent-pca --data genlab.datamodules.FreyFaces --root DATA --out c.png NAME=CKPT:CLASS...

RUN_DIR is a logger's version folder (it holds events.out.tfevents.*); CKPT:CLASS names a checkpoint and the
model class that loads it. Only genlab's public API is used.
"""

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from genlab.callbacks import compare_latent_pca, show_grid
from genlab.figures.base import resolve_class


def scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float, float]]]:
    """Every scalar tag of a run: tag -> [(step, value, wall_time)], from its TensorBoard event files."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value, e.wall_time) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def summary(run_dir: str | Path) -> dict[str, float]:
    """Final value of every val/ metric, the number of validated epochs and the mean seconds per epoch."""
    tags = scalars(run_dir)
    result = {tag: values[-1][1] for tag, values in sorted(tags.items()) if tag.startswith("val/")}
    val = tags.get("val/loss") or next((v for t, v in tags.items() if t.startswith("val/")), [])
    result["epochs"] = len(val)
    if len(val) > 1:  # validation ends each epoch: the gaps between their wall times are epoch times
        result["s_per_epoch"] = (val[-1][2] - val[0][2]) / (len(val) - 1)
    return result


def named(pairs: list[str]) -> dict[str, str]:
    """["name=value", ...] -> {name: value}."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"compare.py: {pair!r} must be NAME=VALUE")
        out[name] = value
    return out


def load(spec: str) -> torch.nn.Module:
    """"path/to.ckpt:genlab.models.X" -> that model on the CPU, in eval mode."""
    path, _, cls = spec.rpartition(":")
    return resolve_class(cls).load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()


def plot_curves(runs: dict[str, str], tags: list[str], out: str, log_y: bool = False) -> None:
    """One panel per tag, one line per run, against the optimiser step."""
    fig, axes = plt.subplots(1, len(tags), figsize=(5 * len(tags), 3.6), layout="constrained", squeeze=False)
    for ax, tag in zip(axes[0], tags):
        for name, run in runs.items():
            values = scalars(run).get(tag)
            if values is None:
                sys.exit(f"compare.py: run {run} has no scalar {tag!r}")
            ax.plot([s for s, _, _ in values], [v for _, v, _ in values], marker="." if len(values) < 40 else None,
                    label=name)
        ax.set(xlabel="step", ylabel=tag, yscale="log" if log_y else "linear", title=tag)
        ax.legend(fontsize=8)
    fig.savefig(out, dpi=80)


def plot_samples(models: dict[str, str], out: str, num: int = 36, seed: int = 0) -> None:
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.5), layout="constrained", squeeze=False)
    for ax, (name, spec) in zip(axes[0], models.items()):
        with torch.no_grad():
            images = load(spec).sample(num, generator=torch.Generator().manual_seed(seed)).clamp(0, 1)
        show_grid(ax, images, ncol=int(num**0.5), title=name)
    fig.savefig(out, dpi=80)


def plot_latent_pca(models: dict[str, str], data: str, root: str, out: str, num: int = 1000) -> None:
    datamodule = resolve_class(data)(root=root, batch_size=num)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.val_dataloader()))
    fig = compare_latent_pca({name: load(spec) for name, spec in models.items()}, x[:num], y[:num])
    fig.savefig(out, dpi=80)


def main(argv: list[str] | None = None) -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("summary").add_argument("runs", nargs="+")
    curves = sub.add_parser("curves")
    curves.add_argument("--tag", nargs="+", default=["val/loss"], help="one panel per tag")
    curves.add_argument("--log_y", action="store_true")
    for name in ("curves", "samples", "latent-pca"):
        command = curves if name == "curves" else sub.add_parser(name)
        command.add_argument("--out", required=True)
        command.add_argument("runs", nargs="+", help="NAME=RUN_DIR (curves) or NAME=CKPT:CLASS")
        if name == "latent-pca":
            command.add_argument("--data", required=True)
            command.add_argument("--root", required=True)
    args = parser.parse_args(argv)
    if args.command == "summary":
        for run in args.runs:
            print(run, {k: round(v, 4) for k, v in summary(run).items()})
    elif args.command == "curves":
        plot_curves(named(args.runs), args.tag, args.out, args.log_y)
    elif args.command == "samples":
        plot_samples(named(args.runs), args.out)
    else:
        plot_latent_pca(named(args.runs), args.data, args.root, args.out)


if __name__ == "__main__":
    main()
