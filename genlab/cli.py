"""`genlab` command line: LightningCLI with models and datamodules chosen by class name.

    genlab fit                                    # ConvVAE on the embedded Shapes data, a short run
    genlab fit --model VAE --data MNIST --data.root /path/to/data
    genlab test --model VAE --data MNIST --ckpt_path runs/.../checkpoints/last.ckpt
    genlab plot --ckpt_path runs/.../checkpoints/last.ckpt --figure traversal --model VAE --data MNIST
"""

import argparse
import inspect
import sys

from lightning import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from . import datamodules, models
from .callbacks import FIGURES, default_callbacks, render_from_checkpoint

DEFAULT_MODEL, DEFAULT_DATA = "ConvVAE", "Shapes"


def public_classes(module: object, base: type) -> list[str]:
    """Names a user may pass to --model / --data: the public subclasses of `base` in `module`."""
    return sorted(name for name in module.__all__
                  if inspect.isclass(cls := getattr(module, name)) and issubclass(cls, base) and cls is not base
                  and not inspect.isabstract(cls) and name not in ("Autoencoder", "Adversarial", "ImageDataModule"))


def check_class_names(args: list[str]) -> None:
    """Fail with the list of valid names when --model or --data names a class genlab does not have.

    jsonargparse's own message ("Expected a dot import path...") lists nothing a user can pick from.
    """
    choices = {"--model": public_classes(models, LightningModule),
               "--data": public_classes(datamodules, LightningDataModule)}
    for i, arg in enumerate(args):
        flag, _, value = arg.partition("=")
        if flag in choices and not value and i + 1 < len(args):
            value = args[i + 1]
        if flag in choices and value and "." not in value and value not in choices[flag]:
            sys.exit(f"genlab: error: {flag} {value!r} is not a genlab {'model' if flag == '--model' else 'dataset'}; "
                     f"choose one of: {', '.join(choices[flag])} (or a full import path to your own class)")


class GenlabCLI(LightningCLI):
    """LightningCLI with genlab's defaults: ConvVAE on Shapes, image shape linked from data, last + best checkpoints."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.set_defaults({"model": DEFAULT_MODEL, "data": DEFAULT_DATA})
        # The model is built for the data it is given: (C, H, W) comes from the datamodule, never typed twice.
        parser.link_arguments("data.image_shape", "model.init_args.image_shape", apply_on="instantiate")
        # Conditional models take the number of classes too; jsonargparse skips the link for models without it.
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.add_argument("--figures", type=bool, default=True,
                            help="Add the figure callbacks that fit the model (samples, reconstructions, ...)")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.monitor": "val/loss",
                             "checkpoint.filename": "best-{epoch:03d}", "checkpoint.save_top_k": 1})

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # A link fills num_classes into the recorded hparams even for models without that argument; the
        # checkpoint must hold only what the model's __init__ takes, or reloading it fails.
        accepted = inspect.signature(type(self.model)).parameters
        for key in [k for k in self.model.hparams if k not in accepted and k != "_class_path"]:
            del self.model.hparams[key]

    def before_fit(self) -> None:
        if self.config[self.subcommand].figures:
            present = {type(callback) for callback in self.trainer.callbacks}
            self.trainer.callbacks += [c for c in default_callbacks(self.model) if type(c) not in present]

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        if args is None or isinstance(args, list):
            check_class_names(list(sys.argv[1:] if args is None else args))
        super().parse_arguments(parser, args)


def plot(args: list[str]) -> None:
    """`genlab plot --ckpt_path C --figure F [--out_dir D] --model M --data D ...`: one figure, no training."""
    parser = argparse.ArgumentParser(prog="genlab plot", description=plot.__doc__)
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--figure", required=True, choices=sorted(FIGURES))
    parser.add_argument("--out_dir", default="figures")
    known, rest = parser.parse_known_args(args)
    cli = main(rest, run=False)  # the same --model / --data flags as fit, so the data is built the same way
    path = render_from_checkpoint(known.ckpt_path, cli.datamodule, known.figure, known.out_dir, type(cli.model))
    print(path)


def main(args: ArgsType = None, run: bool = True) -> GenlabCLI | None:
    """Entry point of the `genlab` console script and of the top-level `cli.py`."""
    argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
    if run and argv[:1] == ["plot"]:
        return plot(argv[1:])
    try:
        return GenlabCLI(
            LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            trainer_defaults={"max_epochs": 10, "default_root_dir": "runs"},
            save_config_kwargs={"overwrite": True}, args=args, run=run,
        )
    except datamodules.DatasetNotFoundError as error:
        if args is not None:  # called from Python: let the caller handle it
            raise
        sys.exit(f"genlab: error: {error}")


def console() -> None:
    """The `genlab` console script: like `main`, but returns nothing, so the exit status is 0 on success."""
    main()


if __name__ == "__main__":
    console()
