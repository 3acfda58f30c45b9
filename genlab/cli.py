"""`genlab` command line: LightningCLI with models and datamodules chosen by class name.

    genlab fit                                    # ConvVAE on the embedded Shapes data, a short run
    genlab fit --model VAE --data MNIST --data.root /path/to/data
    genlab test --model VAE --data MNIST --ckpt_path runs/.../checkpoints/last.ckpt
"""

import inspect
import sys

from lightning import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from . import datamodules, models

DEFAULT_MODEL, DEFAULT_DATA = "ConvVAE", "Shapes"


def public_classes(module: object, base: type) -> list[str]:
    """Names a user may pass to --model / --data: the public subclasses of `base` in `module`."""
    return sorted(name for name in module.__all__
                  if inspect.isclass(cls := getattr(module, name)) and issubclass(cls, base) and cls is not base
                  and not inspect.isabstract(cls) and name not in ("Autoencoder", "ImageDataModule"))


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

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        if args is None or isinstance(args, list):
            check_class_names(list(sys.argv[1:] if args is None else args))
        super().parse_arguments(parser, args)


def main(args: ArgsType = None, run: bool = True) -> GenlabCLI:
    """Entry point of the `genlab` console script and of the top-level `cli.py`."""
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


if __name__ == "__main__":
    main()
