"""`genlab plot`: one figure of a trained run, without training.

    genlab plot --ckpt_path runs/lightning_logs/version_0/checkpoints/last.ckpt --figure traversal --span 2

The model comes from the checkpoint and the data from the run's saved config (either can be given as in `fit`);
every option of the figure's callback is a flag (`genlab plot --figure traversal --help` lists them); the PNG goes
to `<run>/plots/<figure>.png`.
"""

import argparse
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from jsonargparse import ArgumentParser

from ..arguments import class_flag, names_class
from ..errors import GenlabError, UsageError
from ..figures import FIGURES
from ..io import load_checkpoint
from ..run_control.checks import check_image_shape
from ..runs import checkpoint_settings, read_run_config, run_folder_of, trusted_class

CLI_PREFIXES = ("--model", "--data", "--trainer", "--seed_everything")


class SplitImages:
    """`val_batch(n)` of another split of a datamodule (figures draw from `val_batch`)."""

    def __init__(self, datamodule: object, split: str) -> None:
        self.datamodule, self.split = datamodule, split
        self.class_names = getattr(datamodule, "class_names", None)

    def val_batch(self, n: int) -> tuple:
        return self.datamodule.val_batch(n, split=self.split)


def figure_options(figure: str, argv: list[str]) -> dict:
    """The figure callback's own arguments from `argv`, checked against its signature."""
    cls = FIGURES[figure]
    parser = ArgumentParser(prog=f"genlab plot --figure {figure}", exit_on_error=False,
                            description=inspect.getdoc(cls))
    parser.add_class_arguments(cls, skip={"every_n_epochs"})
    try:
        return {k: v for k, v in vars(parser.parse_args(argv)).items() if k != "__default_config__"}
    except Exception as error:  # noqa: BLE001 - jsonargparse's errors: one line with the allowed options
        options = ", ".join(f"--{p}" for p in inspect.signature(cls).parameters if p != "every_n_epochs")
        raise UsageError(f"{' '.join(str(error).split())}; --figure {figure} takes: {options}") from error


def applicable(model: object) -> list[str]:
    """The figures that can be drawn for `model`."""
    names = []
    for name, cls in FIGURES.items():
        try:
            cls().check(model)
            names.append(name)
        except (TypeError, ValueError):
            pass
    return names


def main(argv: list[str], build: Callable[..., object]) -> Path:
    """Draw the figure; `build(args, run=False)` is the command line's `main`, building the model and data the way
    `fit` would (passed in: the command line imports this module)."""
    parser = argparse.ArgumentParser(prog="genlab plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True, help="checkpoint of the trained model")
    parser.add_argument("--figure", required=True, choices=sorted(FIGURES))
    parser.add_argument("--out_dir", help="folder for the PNG (default: <run>/plots)")
    parser.add_argument("--split", default="val", choices=("val", "test"), help="where real images come from")
    known, rest = parser.parse_known_args(argv)

    cli_args = [a for i, a in enumerate(rest) if a.startswith(CLI_PREFIXES)
                or (i > 0 and rest[i - 1].startswith(CLI_PREFIXES) and "=" not in rest[i - 1]
                    and not a.startswith("--"))]
    figure_args = [a for a in rest if a not in cli_args]
    options = figure_options(known.figure, figure_args)
    hparams = load_checkpoint(known.ckpt_path).get("hyper_parameters", {})  # refuses files that would run code
    run = run_folder_of(known.ckpt_path)
    extra = []
    if not names_class(cli_args, "model") and hparams.get("_class_path"):
        model_class = trusted_class(hparams["_class_path"], None, known.ckpt_path, "--model")
        extra.append(class_flag("model", model_class, checkpoint_settings(hparams)))
    data = read_run_config(run).get("data")
    if not names_class(cli_args, "data") and isinstance(data, dict) and data.get("class_path"):
        data_class = trusted_class(data["class_path"], None, run / "config.yaml", "--data")
        extra.append(class_flag("data", data_class, data.get("init_args")))
    cli = build([*extra, *cli_args], run=False)
    model = type(cli.model).load_from_checkpoint(known.ckpt_path, map_location="cpu", weights_only=True)
    check_image_shape(model, cli.datamodule, hparams, known.ckpt_path)
    drawer = FIGURES[known.figure](**options)
    try:
        drawer.check(model)
    except TypeError as error:
        raise GenlabError(f"--figure {known.figure} does not apply to {type(model).__name__} ({error}); figures "
                          f"that do: {', '.join(applicable(model))}") from error
    source = cli.datamodule if known.split == "val" else SplitImages(cli.datamodule, known.split)
    path = Path(known.out_dir or (run / "plots" if run else "plots")) / f"{known.figure}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    drawer.draw(model, source).savefig(path)
    print(path, file=sys.stdout)
    return path
