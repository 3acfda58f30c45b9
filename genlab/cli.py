"""`genlab` command line: LightningCLI with models and datamodules chosen by class name or import path.

    genlab fit                                    # ConvVAE on the embedded Shapes data, a short run
    genlab fit --model VAE --data MNIST --data.root /path/to/data
    genlab fit --model mypkg.MyModel              # any importable LightningModule
    genlab test --model VAE --data MNIST --ckpt_path runs/.../checkpoints/last.ckpt
    genlab plot --ckpt_path runs/.../checkpoints/last.ckpt --figure traversal --model VAE --data MNIST
    genlab report runs/lightning_logs/version_0   # one self-contained HTML page of a run

This module wires the parser and formats errors; resume, run-folder and fit-callback policy live in `run_control`,
the callbacks `test`/`predict` add in `evaluation`, logger policy in `loggers`, the names `--model`/`--data` accept in
`names`.
"""

import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from lightning import LightningDataModule, LightningModule
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from . import datamodules, report
from .arguments import checked_argv, names_class, with_default_classes
from .errors import GenlabError, innermost_message, is_config_error, user_error
from .evaluation import PredictionWriter, TestMetrics, add_prediction_writer, add_test_metrics
from .loggers import offline_asked, wandb_mode, with_logger_save_dir
from .names import check_class_names
from .parser import GenlabParser
from .report import plot
from .run_control import (LatestCheckpoint, RunFolder, check_built, check_settings, fit_callbacks, parse_resuming,
                          restore, signal_handlers)

__all__ = ["GenlabCLI", "check_class_names", "console", "main"]

DEFAULTS = {"model": "ConvVAE", "data": "Shapes"}
MORE_COMMANDS = ("Train and evaluate generative image models. Besides fit/validate/test/predict: `genlab plot "
                 "--ckpt_path C --figure F` draws one figure of a trained run; `genlab report RUN_FOLDER` writes one "
                 "HTML page of a run; `genlab data optimize --data D --output DIR` writes a dataset for streaming. "
                 "`genlab fit --model VAE --help` lists VAE's options.")


class GenlabCLI(LightningCLI):
    """LightningCLI with genlab's defaults: ConvVAE on Shapes, image shape linked from data, last + best checkpoints
    written atomically, a NaN/Inf guard, Ctrl-C/SIGTERM saving a checkpoint, and one-line errors."""

    ckpt_hparams: dict = {}  # hyperparameters stored in --ckpt_path, once it has been checked
    resume_from: Path | None = None  # the checkpoint file this command continues

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.run_folder = RunFolder()
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            self.run_folder.release(getattr(self, "trainer", None))  # a failed start leaves no empty run folder
            raise

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
        parser.add_lightning_class_args(LatestCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.monitor": "val/loss",
                             "checkpoint.filename": "best-{epoch:03d}", "checkpoint.save_top_k": 1})

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        if isinstance(args, dict):
            self.config = parser.parse_object({**DEFAULTS, **args})
            return
        argv = checked_argv(with_logger_save_dir(list(sys.argv[1:] if args is None else args)))
        # The parser itself, not super(): it warns whenever args are given beside sys.argv, and here they always are.
        self.config, self.resume_from, self.ckpt_hparams = parse_resuming(
            lambda given: parser.parse_args(with_default_classes(given, DEFAULTS)), argv, names_class(argv, "model"))
        if self.resume_from is not None:  # held back until before_instantiate_classes: Lightning's own checkpoint
            self.config[self.config.subcommand].ckpt_path = None  # parsing, run next, would overwrite the user's flags

    def before_instantiate_classes(self) -> None:
        if not self.subcommand:
            return
        section = self.config[self.subcommand]
        if self.resume_from is not None:
            section.ckpt_path = str(self.resume_from)
        self.run_folder.prepare(section, self.subcommand, self.save_config_kwargs)
        if not self.run_folder.writable:
            self.save_config_callback = None

    def instantiate_classes(self) -> None:
        section = self.config[self.subcommand] if self.subcommand else self.config
        check_settings(section, self.subcommand)
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, MisconfigurationException) as error:
            if isinstance(error, GenlabError) or not is_config_error(error):
                raise
            raise GenlabError(innermost_message(error)) from error
        check_built(self.model, self.datamodule, self.trainer, self.ckpt_hparams, section.get("ckpt_path"),
                    self.config_init[self.subcommand] if self.subcommand else None)
        wandb_mode(self.trainer.loggers, offline_asked(section.trainer.get("logger")))

    def before_fit(self) -> None:
        section = self.config[self.subcommand]
        self.trainer.callbacks[:] = fit_callbacks(
            self.trainer.callbacks, self.model, section.figures, section.figures_every_n_epochs,
            section.non_finite_guard, section.compile)

    def before_predict(self) -> None:
        add_prediction_writer(self.trainer.callbacks, self.config[self.subcommand].predict)

    def before_test(self) -> None:
        section = self.config[self.subcommand]
        add_test_metrics(self.trainer.callbacks, section.metrics, section.get("ckpt_path"))


def main(args: ArgsType = None, run: bool = True) -> GenlabCLI | None:
    """Entry point of the `genlab` console script and of the top-level `cli.py`.

    From the shell (args=None) a mistake prints one `genlab: error: ...` line and exits non-zero; from Python
    the exception is raised (a `GenlabError` for bad arguments).
    """
    argv = list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else []
    commands = {"plot": partial(plot.main, build=main), "data": datamodules.streaming.main, "report": report.main}
    handlers = signal_handlers()
    try:
        if run and argv[:1] and argv[0] in commands:
            return commands[argv[0]](argv[1:])
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


def console() -> None:
    """The `genlab` console script: like `main`, but returns nothing, so the exit status is 0 on success."""
    sys.path.insert(0, os.getcwd())  # `--data mypkg.MyDataModule` from the current folder, as `python -m` allows
    main()


if __name__ == "__main__":
    console()
