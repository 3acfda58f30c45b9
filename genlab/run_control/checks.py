"""What a command checks: its settings before the classes are built (`check_settings`), and once they are built that
the model fits the data's image shape, its hyperparameters can be reloaded, and checkpoints are written atomically
and loaded as weights only (`check_built`)."""

import inspect

from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..errors import GenlabError
from ..io import AtomicCheckpointIO


def check_settings(section: object, subcommand: str | None) -> None:
    """Refuse settings Lightning would take but that make no run: `fit` with max_epochs 0 or below -1."""
    max_epochs = section.trainer.get("max_epochs")
    if subcommand == "fit" and max_epochs is not None and (max_epochs == 0 or max_epochs < -1):
        raise GenlabError(f"--trainer.max_epochs={max_epochs} is invalid; it must be a positive integer "
                          f"(or -1 for no limit)")


def check_image_shape(model: object, datamodule: object, ckpt_hparams: dict, ckpt_path: object) -> None:
    """The model (or the checkpoint it is loaded from) must be built for the images the data delivers."""
    data_shape = getattr(datamodule, "image_shape", None)
    for shape, source in ((ckpt_hparams.get("image_shape"), f"the checkpoint {ckpt_path}"),
                          (getattr(model, "image_shape", None), type(model).__name__)):
        if data_shape is not None and shape is not None and tuple(shape) != tuple(data_shape):
            raise GenlabError(f"{source} is built for images of shape {tuple(shape)} but {type(datamodule).__name__} "
                              f"gives {tuple(data_shape)}; use data of the same shape (or a matching checkpoint)")


def check_built(model: object, datamodule: object, trainer: object, ckpt_hparams: dict, ckpt_path: object,
                run_args: dict | None = None) -> None:
    """After the classes are built: the image shape checked, hyperparameters a checkpoint can be reloaded from (a
    link fills `num_classes` in even for models without that argument), checkpoints written atomically, and the
    command's `run_args` (e.g. `trainer.fit`'s) loading `--ckpt_path` as weights only unless told otherwise."""
    check_image_shape(model, datamodule, ckpt_hparams, ckpt_path)
    accepted = inspect.signature(type(model)).parameters
    for key in [k for k in model.hparams if k not in accepted and k != "_class_path"]:
        del model.hparams[key]
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    if run_args is not None and run_args.get("weights_only", False) is None:
        run_args["weights_only"] = True  # never unpickle code from --ckpt_path
