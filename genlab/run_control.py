"""Run control for the command line: which checkpoint a command continues, which folder a run owns, and what a
failed start leaves behind.

- `parse_resuming`: with `--ckpt_path` (a file or `last`), the checkpoint is found and checked -- its class must be
  genlab's own or the one named, flags that would build another model are refused -- and the arguments are parsed
  again with the checkpoint's settings first and the user's flags over them.
- `RunFolder`: the trained run's own `version_N` for a checkpoint written in one, else a newly claimed one (removed
  again if the command fails to start); commands other than `fit` write `config_<command>.yaml` beside the
  training config.
- `signal_handlers` / `restore`: the process's SIGINT/SIGTERM handlers, put back after every command.
"""

import errno
import inspect
import os
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from .arguments import class_flag, explicit_init_args, insert_after_subcommand, names_class
from .errors import GenlabError
from .io import AtomicCheckpointIO, load_checkpoint
from .loggers import logger_for_run, runs_parent
from .runs import (RUN_FOLDER_ENV, check_model_class, checkpoint_settings, claim_run_folder, find_last_checkpoint,
                   read_run_config, remove_if_unused, run_folder_of, settings_conflicts, shared_run_folder,
                   trusted_class)

Parse = Callable[[list[str]], Namespace]  # the arguments -> the parsed config (default classes filled in)


def parse_resuming(parse: Parse, argv: list[str], model_named: bool) -> tuple[Namespace, Path | None, dict]:
    """(config, checkpoint file to continue or None, its hyperparameters) for `argv`, parsed by `parse`."""
    asks_checkpoint = any(a.partition("=")[0] == "--ckpt_path" for a in argv)
    # With a checkpoint the arguments are parsed twice; only the second, final parse may print the config.
    config = parse([a for a in argv if not a.startswith("--print_config")] if asks_checkpoint else argv)
    subcommand = config.get("subcommand")
    if not subcommand or not config[subcommand].get("ckpt_path"):
        return config, None, {}
    section = config[subcommand]
    wanted = {name: section.model.init_args[name] for name in explicit_init_args(argv, "model")
              if name in (section.model.get("init_args") or {})}
    path = section.ckpt_path
    if path == "last":
        path = find_last(section, subcommand, argv, model_named, wanted)
    if not path or not Path(path).is_file():
        section.ckpt_path = path  # None (a new run), or Lightning's own "best"/"hpc"/registry names
        return config, None, {}
    hparams = load_checkpoint(path).get("hyper_parameters", {})  # refuses files that would run code
    named = section.model.class_path if model_named else None
    saved_class = trusted_class(hparams.get("_class_path") or section.model.class_path, named, path, "--model")
    check_model_class(path, saved_class, named)
    conflicts, changes = settings_conflicts(hparams, wanted)
    if conflicts:
        raise GenlabError(f"{path} was trained with other settings than those given ({'; '.join(conflicts)}); "
                          f"drop those flags to continue it, or train a new run without --ckpt_path")
    if changes:
        rank_zero_info(f"genlab: resuming {path} with changed settings: {'; '.join(changes)}")
    # The checkpoint's settings first, then the user's flags; data from the run's own config unless named.
    extra = [class_flag("model", saved_class, checkpoint_settings(hparams))]
    data = read_run_config(run_folder_of(path)).get("data")
    if isinstance(data, dict) and data.get("class_path") and not names_class(argv, "data"):
        source = run_folder_of(path) / "config.yaml"
        extra.append(class_flag("data", trusted_class(data["class_path"], None, source, "--data"),
                                data.get("init_args")))
    config = parse(insert_after_subcommand(argv, extra))
    config[subcommand].ckpt_path = str(path)
    return config, Path(path), hparams


def find_last(section: Namespace, subcommand: str, argv: list[str], model_named: bool, wanted: dict) -> str | None:
    """`--ckpt_path last`: the newest last.ckpt of the model, data and settings asked for."""
    root = Path(section.checkpoint.get("dirpath") or section.trainer.get("default_root_dir") or "runs")
    model = section.model.class_path if model_named else None
    data = section.data.class_path if names_class(argv, "data") and section.get("data") else None
    found = find_last_checkpoint(root, model, data, wanted)
    if found:
        rank_zero_info(f"genlab: --ckpt_path last -> {found}")
        return str(found)
    if subcommand == "fit":  # set-and-forget: the first run of a resumable script starts from scratch
        rank_zero_info(f"genlab: --ckpt_path last: no matching last.ckpt under {root} yet; starting a new run")
        return None
    raise GenlabError(f"--ckpt_path last: no last.ckpt under {root} of the model and data asked for; train "
                      f"first (genlab fit ...) or give the path")


class RunFolder:
    """The `version_N` folder a command writes into, decided before the logger and checkpoint callback are built."""

    def __init__(self) -> None:
        self.claimed: Path | None = None  # created by this command: removed again if it fails to start
        self.writable = True  # False: an existing run this command cannot write in (its config is not saved)

    def prepare(self, section: Namespace, subcommand: str, save_config_kwargs: dict) -> None:
        """Point the logger and the checkpoint folder of `section` (one subcommand's config) at this run's folder."""
        if section.trainer.get("logger") is False:
            return
        if subcommand != "fit":  # keep the training command's config.yaml beside this one's
            save_config_kwargs["config_filename"] = f"config_{subcommand}.yaml"
        ckpt = section.get("ckpt_path")
        root = Path(section.trainer.get("default_root_dir") or "runs")
        folder = run_folder_of(ckpt) if ckpt and Path(ckpt).is_file() else None
        parent = runs_parent(section.trainer.logger, root)
        if folder is None and parent is not None:
            folder = shared_run_folder() or claim_run_folder(parent)
            self.claimed = folder
        if folder is None:
            return
        os.environ[RUN_FOLDER_ENV] = str(folder)  # DDP ranks started by Lightning read it (shared_run_folder)
        if not section.checkpoint.get("dirpath"):
            section.checkpoint.dirpath = str(folder / "checkpoints")
        rank_zero_info(f"genlab: run folder {folder}" + (f" (continuing {Path(ckpt).name})" if ckpt else ""))
        if subcommand != "fit" and (problem := write_problem(folder)):
            # evaluate anyway: the results are printed, and the first file the command must write says where
            rank_zero_info(f"genlab: cannot write in {folder} ({problem}): no logs or config_{subcommand}.yaml there")
            section.trainer.logger, self.writable = False, False
            return
        section.trainer.logger = logger_for_run(section.trainer.logger, folder)

    def release(self, trainer: object | None) -> None:
        """After a failed start: remove the claimed folder if nothing was written in it (on rank zero only)."""
        if self.claimed is not None and (trainer is None or trainer.is_global_zero):
            remove_if_unused(self.claimed)


def write_problem(folder: Path) -> str | None:
    """Why nothing can be written in `folder` (a read-only mount, no permission, a full disk), or None."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".genlab-probe.", dir=folder)
    except OSError as error:
        return f"{error.strerror}, {errno.errorcode.get(error.errno, error.errno)}"
    os.close(fd)
    os.unlink(probe)
    return None


def check_image_shape(model: object, datamodule: object, ckpt_hparams: dict, ckpt_path: object) -> None:
    """The model (or the checkpoint it is loaded from) must be built for the images the data delivers."""
    data_shape = getattr(datamodule, "image_shape", None)
    for shape, source in ((ckpt_hparams.get("image_shape"), f"the checkpoint {ckpt_path}"),
                          (getattr(model, "image_shape", None), type(model).__name__)):
        if data_shape is not None and shape is not None and tuple(shape) != tuple(data_shape):
            raise GenlabError(f"{source} is built for images of shape {tuple(shape)} but {type(datamodule).__name__} "
                              f"gives {tuple(data_shape)}; use data of the same shape (or a matching checkpoint)")


def signal_handlers() -> dict[int, object]:
    """The process's SIGINT/SIGTERM handlers (only the main thread may set them)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}


def restore(handlers: dict[int, object]) -> None:
    """Put the handlers back: after a failed fit Lightning's teardown reinstalls the ones it saved, i.e. genlab's."""
    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)


def check_built(model: object, datamodule: object, trainer: object, ckpt_hparams: dict, ckpt_path: object) -> None:
    """After the classes are built: the image shape checked, hyperparameters a checkpoint can be reloaded from (a
    link fills `num_classes` in even for models without that argument), checkpoints written atomically."""
    check_image_shape(model, datamodule, ckpt_hparams, ckpt_path)
    accepted = inspect.signature(type(model)).parameters
    for key in [k for k in model.hparams if k not in accepted and k != "_class_path"]:
        del model.hparams[key]
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
