"""`genlab` command line: LightningCLI with models and datamodules chosen by class name.

    genlab fit                                    # ConvVAE on the embedded Shapes data, a short run
    genlab fit --model VAE --data MNIST --data.root /path/to/data
    genlab test --model VAE --data MNIST --ckpt_path runs/.../checkpoints/last.ckpt
    genlab plot --ckpt_path runs/.../checkpoints/last.ckpt --figure traversal --model VAE --data MNIST
    genlab report runs/lightning_logs/version_0   # one self-contained HTML page of a run
"""

import errno
import inspect
import netrc
import os
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import lightning.pytorch.callbacks as lightning_callbacks
import lightning.pytorch.loggers as lightning_loggers
from lightning import Callback, LightningDataModule, LightningModule
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from . import callbacks, datamodules, models, plot, report
from .callbacks import default_callbacks
from .callbacks import reliability
from .callbacks.compile import Compile
from .callbacks.evaluation import TestMetrics
from .callbacks.predictions import PredictionWriter
from .arguments import (check_config_files, check_import_paths, class_flag, class_help, explicit_init_args,
                        insert_after_subcommand, names_class, with_default_classes, with_logger_save_dir)
from .errors import GenlabError, GenlabParser, check_names, innermost_message, public_classes, \
    raised_by_genlab
from .io import AtomicCheckpointIO, load_checkpoint
from .runs import (RUN_FOLDER_ENV, check_model_class, checkpoint_settings, claim_run_folder, find_last_checkpoint,
                   logger_for_run, read_run_config, remove_if_unused, run_folder_of, runs_parent,
                   settings_conflicts, shared_run_folder, trusted_class)

DEFAULT_MODEL, DEFAULT_DATA = "ConvVAE", "Shapes"
MORE_COMMANDS = ("Train and evaluate generative image models. Besides fit/validate/test/predict: `genlab plot "
                 "--ckpt_path C --figure F` draws one figure of a trained run; `genlab report RUN_FOLDER` writes one "
                 "HTML page of a run; `genlab data optimize --data D --output DIR` writes a dataset for streaming. "
                 "`genlab fit --model VAE --help` lists VAE's options.")


def model_names() -> list[str]:
    """genlab's own models, by the names `--model` accepts."""
    return public_classes(models, LightningModule, ("Autoencoder", "Adversarial"))


def data_names() -> list[str]:
    """genlab's own datamodules, by the names `--data` accepts."""
    return public_classes(datamodules, LightningDataModule, ("ImageDataModule",))


def name_choices() -> dict[str, tuple[str, list[str]]]:
    """The flags whose value is a class name, and the names genlab accepts for each."""
    callback_names = sorted({*public_classes(lightning_callbacks, Callback), *public_classes(callbacks, Callback),
                             *public_classes(reliability, Callback)})
    return {"--model": ("genlab model", model_names()), "--data": ("genlab dataset", data_names()),
            "--trainer.callbacks": ("known callback", callback_names),
            "--trainer.logger": ("known logger", public_classes(lightning_loggers, Logger))}


def check_class_names(args: list[str]) -> None:
    """Fail with the list of valid names when --model, --data, a callback or a logger names an unknown class.

    jsonargparse's own message ("Expected a dot import path...") lists nothing a user can pick from.
    """
    check_names(args, name_choices())


class GenlabCLI(LightningCLI):
    """LightningCLI with genlab's defaults: ConvVAE on Shapes, image shape linked from data, last + best checkpoints
    written atomically, a NaN/Inf guard, Ctrl-C/SIGTERM saving a checkpoint, and one-line errors."""

    ckpt_hparams: dict = {}  # hyperparameters stored in --ckpt_path, once it has been checked
    claimed: Path | None = None  # the run folder this command created (removed again if it fails to start)
    model_named = False  # whether --model was given on the command line

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The model is built for the data it is given: (C, H, W) comes from the datamodule, never typed twice.
        parser.link_arguments("data.image_shape", "model.init_args.image_shape", apply_on="instantiate")
        # Conditional models take the number of classes too; jsonargparse skips the link for models without it.
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.add_argument("--figures", type=bool, default=True,
                            help="Add the figure callbacks that fit the model (samples, reconstructions, ...)")
        parser.add_argument("--figures_every_n_epochs", type=int, default=1,
                            help="Draw the default figures every N epochs (they dominate tiny datasets' epochs)")
        parser.add_argument("--non_finite_guard", type=bool, default=True,
                            help="Stop at the first NaN/Inf loss term, gradient or weight (fit only)")
        parser.add_argument("--compile", type=bool, default=False,
                            help="torch.compile the model's networks (and channels-last for conv nets on CUDA)")
        parser.add_class_arguments(TestMetrics, "metrics", instantiate=False)  # `genlab test --metrics.* ...`
        # `genlab predict --predict.num_samples ...`; not a group: the subcommand "predict" already names one
        parser.add_class_arguments(PredictionWriter, "predict", instantiate=False, as_group=False)
        parser.add_lightning_class_args(reliability.LatestCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.monitor": "val/loss",
                             "checkpoint.filename": "best-{epoch:03d}", "checkpoint.save_top_k": 1})

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        defaults = {"model": DEFAULT_MODEL, "data": DEFAULT_DATA}
        if isinstance(args, dict):
            self.config = parser.parse_object({**defaults, **args})
            return
        argv = class_help(with_logger_save_dir(list(sys.argv[1:] if args is None else args)))
        check_class_names(argv)
        check_import_paths(argv)
        check_config_files(argv)
        self.model_named = names_class(argv, "model")
        asks_checkpoint = any(a.partition("=")[0] == "--ckpt_path" for a in argv)
        # With a checkpoint the arguments are parsed twice; only the second, final parse may print the config.
        first = [a for a in argv if not a.startswith("--print_config")] if asks_checkpoint else argv
        # The parser itself, not super(): it warns whenever args are given beside sys.argv, and here they always are.
        self.config = parser.parse_args(with_default_classes(first, defaults))
        subcommand = self.config.get("subcommand")
        if not subcommand or not self.config[subcommand].get("ckpt_path"):
            return
        config = self.config[subcommand]
        wanted = {name: config.model.init_args[name] for name in explicit_init_args(argv, "model")
                  if name in (config.model.get("init_args") or {})}
        path = config.ckpt_path
        if path == "last":
            path = self.find_last(config, subcommand, argv, wanted)
        if not path or not Path(path).is_file():
            config.ckpt_path = path  # None (a new run), or Lightning's own "best"/"hpc"/registry names
            return
        self.ckpt_hparams = load_checkpoint(path).get("hyper_parameters", {})  # refuses files that would run code
        named = config.model.class_path if self.model_named else None
        saved_class = trusted_class(self.ckpt_hparams.get("_class_path") or config.model.class_path, named, path,
                                    "--model")
        check_model_class(path, saved_class, named)
        conflicts, changes = settings_conflicts(self.ckpt_hparams, wanted)
        if conflicts:
            raise GenlabError(f"{path} was trained with other settings than those given ({'; '.join(conflicts)}); "
                              f"drop those flags to continue it, or train a new run without --ckpt_path")
        if changes:
            rank_zero_info(f"genlab: resuming {path} with changed settings: {'; '.join(changes)}")
        # The checkpoint's settings first, then the user's flags; data from the run's own config unless named.
        extra = [class_flag("model", saved_class, checkpoint_settings(self.ckpt_hparams))]
        data = read_run_config(run_folder_of(path)).get("data")
        if isinstance(data, dict) and data.get("class_path") and not names_class(argv, "data"):
            source = run_folder_of(path) / "config.yaml"
            extra.append(class_flag("data", trusted_class(data["class_path"], None, source, "--data"),
                                    data.get("init_args")))
        self.config = parser.parse_args(with_default_classes(insert_after_subcommand(argv, extra), defaults))
        self.config[subcommand].ckpt_path = str(path)

    def find_last(self, config: object, subcommand: str, argv: list[str], wanted: dict) -> str | None:
        """`--ckpt_path last`: the newest last.ckpt of the model, data and settings asked for."""
        root = Path(config.checkpoint.get("dirpath") or config.trainer.get("default_root_dir") or "runs")
        model = config.model.class_path if self.model_named else None
        data = config.data.class_path if names_class(argv, "data") and config.get("data") else None
        found = find_last_checkpoint(root, model, data, wanted)
        if found:
            rank_zero_info(f"genlab: --ckpt_path last -> {found}")
            return str(found)
        if subcommand == "fit":  # set-and-forget: the first run of a resumable script starts from scratch
            rank_zero_info(f"genlab: --ckpt_path last: no matching last.ckpt under {root} yet; starting a new run")
            return None
        raise GenlabError(f"--ckpt_path last: no last.ckpt under {root} of the model and data asked for; train "
                          f"first (genlab fit ...) or give the path")

    def _parse_ckpt_path(self) -> None:
        """Overrides Lightning's private hook, which overwrites the user's flags with the checkpoint's
        hyperparameters: `parse_arguments` applies them itself, after refusing conflicting flags."""

    def before_instantiate_classes(self) -> None:
        """Decide this run's folder before the logger and checkpoint callback are built: the trained run's own
        folder for a checkpoint written in one, else a newly claimed `version_N`."""
        config = self.config[self.subcommand] if self.subcommand else None
        if config is None or config.trainer.get("logger") is False:
            return
        if self.subcommand != "fit":  # keep the training command's config.yaml beside this one's
            self.save_config_kwargs["config_filename"] = f"config_{self.subcommand}.yaml"
        ckpt = config.get("ckpt_path")
        root = Path(config.trainer.get("default_root_dir") or "runs")
        folder = run_folder_of(ckpt) if ckpt and Path(ckpt).is_file() else None
        parent = runs_parent(config.trainer.logger, root)
        if folder is None and parent is not None:
            folder = shared_run_folder() or claim_run_folder(parent)
            self.claimed = folder
        if folder is None:
            return
        os.environ[RUN_FOLDER_ENV] = str(folder)  # DDP ranks started by Lightning read it (shared_run_folder)
        config.trainer.logger = logger_for_run(config.trainer.logger, folder)
        if not config.checkpoint.get("dirpath"):
            config.checkpoint.dirpath = str(folder / "checkpoints")
        rank_zero_info(f"genlab: run folder {folder}" + (f" (continuing {Path(ckpt).name})" if ckpt else ""))

    def instantiate_classes(self) -> None:
        try:
            self._instantiate_classes()
        except BaseException:
            self.remove_claimed()
            raise

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            self.remove_claimed()
            raise

    def remove_claimed(self) -> None:
        """A failed start leaves no empty run folder behind."""
        if self.claimed is not None and self.trainer_is_zero():
            remove_if_unused(self.claimed)

    def trainer_is_zero(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is None or trainer.is_global_zero

    def _instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        max_epochs = config.trainer.get("max_epochs")
        if self.subcommand == "fit" and max_epochs is not None and (max_epochs == 0 or max_epochs < -1):
            raise GenlabError(f"--trainer.max_epochs={max_epochs} is invalid; it must be a positive integer "
                              f"(or -1 for no limit)")
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, MisconfigurationException) as error:
            if isinstance(error, GenlabError) or not is_config_error(error):
                raise
            raise GenlabError(innermost_message(error)) from error
        # A link fills num_classes into the recorded hparams even for models without that argument; the
        # checkpoint must hold only what the model's __init__ takes, or reloading it fails.
        accepted = inspect.signature(type(self.model)).parameters
        for key in [k for k in self.model.hparams if k not in accepted and k != "_class_path"]:
            del self.model.hparams[key]
        check_image_shape(self.model, self.datamodule, self.ckpt_hparams, config.get("ckpt_path"))
        if self.subcommand and self.config_init[self.subcommand].get("weights_only", False) is None:
            self.config_init[self.subcommand]["weights_only"] = True  # never unpickle code from --ckpt_path
        if type(self.trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        wandb_offline_without_key(self.trainer.loggers)

    def before_fit(self) -> None:
        config, present = self.config[self.subcommand], {type(callback) for callback in self.trainer.callbacks}
        guards = [reliability.GracefulInterrupt(), reliability.RandomState()]
        if config.non_finite_guard:
            guards.append(reliability.NonFiniteGuard())
        # First in the list: the guard must run before ModelCheckpoint could save a non-finite step.
        self.trainer.callbacks[:0] = [c for c in guards if type(c) not in present]
        if config.figures:
            self.trainer.callbacks += [c for c in default_callbacks(self.model, config.figures_every_n_epochs)
                                       if type(c) not in present]
        if config.compile and Compile not in present:
            self.trainer.callbacks.append(Compile())

    def before_predict(self) -> None:
        """`genlab predict` writes samples, reconstructions and codes into the run's predictions/ folder."""
        if not any(isinstance(c, PredictionWriter) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(PredictionWriter(**self.config[self.subcommand].predict))

    def before_test(self) -> None:
        """`genlab test` prints, logs and saves (test_metrics.json) every metric that applies to the model."""
        if any(isinstance(c, TestMetrics) for c in self.trainer.callbacks):
            return
        options = dict(self.config[self.subcommand].metrics)
        checkpoint = Path(self.config[self.subcommand].get("ckpt_path") or "")
        if options.get("save_dir") is None and checkpoint.parent.name == "checkpoints":
            options["save_dir"] = str(checkpoint.parent.parent)  # next to the trained run's figures and config
        self.trainer.callbacks.append(TestMetrics(**options))


def check_image_shape(model: object, datamodule: object, ckpt_hparams: dict, ckpt_path: object) -> None:
    """The model (or the checkpoint it is loaded from) must be built for the images the data delivers."""
    data_shape = getattr(datamodule, "image_shape", None)
    for shape, source in ((ckpt_hparams.get("image_shape"), f"the checkpoint {ckpt_path}"),
                          (getattr(model, "image_shape", None), type(model).__name__)):
        if data_shape is not None and shape is not None and tuple(shape) != tuple(data_shape):
            raise GenlabError(f"{source} is built for images of shape {tuple(shape)} but {type(datamodule).__name__} "
                              f"gives {tuple(data_shape)}; use data of the same shape (or a matching checkpoint)")


def is_config_error(error: BaseException) -> bool:
    """Errors from building the model/data/trainer that a user caused: our own checks, jsonargparse, Lightning's."""
    while error.__cause__ is not None:
        error = error.__cause__
    return (raised_by_genlab(error) or isinstance(error, MisconfigurationException)
            or type(error).__module__.startswith("jsonargparse"))


def wandb_offline_without_key(loggers: list[Logger]) -> None:
    """With a WandbLogger, no WANDB_MODE and no API key (env or `wandb login`), log offline instead of prompting
    or hanging on the network; `wandb sync` uploads the run later. The key itself is never read or logged."""
    mode = os.environ.get("WANDB_MODE")
    if not any(isinstance(logger, WandbLogger) for logger in loggers) or mode in ("offline", "disabled", "dryrun"):
        return
    if os.environ.get("WANDB_API_KEY"):
        return
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        if netrc.netrc().authenticators(host):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    if mode:  # asked for online logging with no key: say so now rather than after W&B's own time-outs
        raise GenlabError(f"WANDB_MODE={mode} but no W&B API key was found (WANDB_API_KEY, or `wandb login` for "
                          f"{host}); set one, or unset WANDB_MODE to log offline and `wandb sync` later")
    os.environ["WANDB_MODE"] = "offline"
    rank_zero_info("genlab: no W&B API key found (WANDB_API_KEY or `wandb login`): logging offline; upload later "
                   "with `wandb sync <save_dir>/wandb/offline-run-*`")


WRITE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.EISDIR,
                errno.EDQUOT}


def write_error(error: BaseException | None) -> OSError | None:
    """The OSError of a failed write (full disk, read-only folder, a file where a folder should be) in the chain."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in WRITE_ERRORS:
            return error
        error = error.__cause__ or error.__context__
    return None


def user_error(error: BaseException) -> tuple[str, int] | None:
    """(message, exit status) for an error the user can fix from its message alone; None for anything else."""
    if isinstance(error, GenlabError):
        return str(error), error.exit_code
    if (failed := write_error(error)) is not None:
        name = errno.errorcode.get(failed.errno, str(failed.errno))
        return (f"cannot write {failed.filename or 'a file'}: {failed.strerror} ({name}); free some space, make the "
                f"folder writable, or choose another --trainer.default_root_dir"), 1
    if isinstance(error, datamodules.DatasetNotFoundError) or (
            isinstance(error, ValueError) and raised_by_genlab(error)):
        return str(error), 1
    return None


def main(args: ArgsType = None, run: bool = True) -> GenlabCLI | None:
    """Entry point of the `genlab` console script and of the top-level `cli.py`.

    From the shell (args=None) a mistake prints one `genlab: error: ...` line and exits non-zero; from Python
    the exception is raised (a `GenlabError` for bad arguments).
    """
    argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
    handlers = signal_handlers()
    try:
        if run and argv[:1] == ["plot"]:
            return plot.main(argv[1:])
        if run and argv[:1] == ["data"]:
            return datamodules.streaming.main(argv[1:])
        if run and argv[:1] == ["report"]:
            return report.main(argv[1:])
        return GenlabCLI(
            LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            trainer_defaults={"max_epochs": 10, "default_root_dir": "runs"}, parser_class=GenlabParser,
            parser_kwargs={"description": MORE_COMMANDS},
            save_config_kwargs={"overwrite": True}, args=args, run=run,
        )
    except Exception as error:  # noqa: BLE001 - anything not a user error is re-raised with its traceback
        reported = user_error(error)
        if args is not None or reported is None or os.environ.get("GENLAB_TRACEBACK"):
            raise
        message, status = reported
        print(f"genlab: error: {message}", file=sys.stderr)
        sys.exit(status)
    finally:
        restore(handlers)


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


def console() -> None:
    """The `genlab` console script: like `main`, but returns nothing, so the exit status is 0 on success."""
    sys.path.insert(0, os.getcwd())  # `--data mypkg.MyDataModule` from the current folder, as `python -m` allows
    main()


if __name__ == "__main__":
    console()
