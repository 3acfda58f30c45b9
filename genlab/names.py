"""The one registry of class names the command line accepts: what jsonargparse itself can resolve.

`--model X` / `--data X` / `--trainer.callbacks X` / `--trainer.logger X` take a full import path to any class
(`--model mypkg.MyModel`) or the short name of any subclass already imported -- genlab's own and any other, with
nothing to register. Only a short name that resolves to nothing is refused here, with genlab's own names listed
(jsonargparse's own "Expected a dot import path" lists nothing a user can pick from).
"""

import importlib
import inspect

import lightning.pytorch.callbacks as lightning_callbacks
import lightning.pytorch.loggers as lightning_loggers
from lightning import Callback, LightningDataModule, LightningModule
from lightning.pytorch.loggers import Logger

from .errors import UsageError

# Family bases: built from networks (or a `load_split`) rather than settings, so not something to name on a command
# line, though subclasses of them are.
FAMILY_BASES = frozenset({"GenerativeModule", "EncoderDecoder", "Autoencoder", "Preset", "Adversarial",
                          "ImageDataModule"})
LITERALS = ("true", "false", "null", "none")


def package_classes(module: object, base: type) -> list[str]:
    """The public, concrete subclasses of `base` that `module` offers, by name (family bases left out)."""
    return sorted(name for name, cls in vars(module).items()
                  if inspect.isclass(cls) and issubclass(cls, base) and cls is not base and not name.startswith("_")
                  and not inspect.isabstract(cls) and name not in FAMILY_BASES)


def loaded_subclasses(base: type) -> set[str]:
    """Short names of every subclass of `base` imported so far: those jsonargparse resolves without a module path."""
    found, todo = set(), [base]
    while todo:
        for cls in todo.pop().__subclasses__():
            if cls.__name__ not in found:
                found.add(cls.__name__)
                todo.append(cls)
    return found


def model_names() -> list[str]:
    """genlab's own models, by the names `--model` accepts."""
    from . import models

    return package_classes(models, LightningModule)


def data_names() -> list[str]:
    """genlab's own datamodules, by the names `--data` accepts."""
    from . import datamodules

    return package_classes(datamodules, LightningDataModule)


def callback_names() -> list[str]:
    from . import callbacks

    return sorted({*package_classes(lightning_callbacks, Callback), *package_classes(callbacks, Callback)})


def name_choices() -> dict[str, tuple[str, type, list[str]]]:
    """The flags whose value is a class: flag -> (what it names, the base class, the names genlab lists)."""
    return {"--model": ("genlab model", LightningModule, model_names()),
            "--data": ("genlab dataset", LightningDataModule, data_names()),
            "--trainer.callbacks": ("known callback", Callback, callback_names()),
            "--trainer.logger": ("known logger", Logger, package_classes(lightning_loggers, Logger))}


def check_class_names(args: list[str]) -> None:
    """Raise a UsageError listing genlab's names when a class flag gives a short name that resolves to no class.
    Import paths and JSON values are left to the parser (`arguments.check_import_paths` explains missing ones)."""
    choices = name_choices()
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        flag = flag.removesuffix("+")
        if flag not in choices:
            continue
        if not eq and i + 1 < len(args):
            value = args[i + 1]
        what, base, names = choices[flag]
        if not value or value[0] in "[{" or "." in value or value.lower() in LITERALS:
            continue
        if value not in names and value not in loaded_subclasses(base):
            raise UsageError(f"{flag} {value!r} is not a {what}; choose one of: {', '.join(names)} "
                             f"(or a full import path to your own class)")


def resolve_class(model_class: type | str) -> type:
    """A class, or its import path ("genlab.models.ConvVAE"), as a class."""
    if not isinstance(model_class, str):
        return model_class
    module, _, name = model_class.rpartition(".")
    if not module:
        raise ValueError(f"model_class={model_class!r} must be a dotted import path such as genlab.models.ConvVAE")
    return getattr(importlib.import_module(module), name)
