"""`RunFolder`: the trained run's own `version_N` for a checkpoint written in one, else a newly claimed one (removed
again if the command fails to start); commands other than `fit` write `config_<command>.yaml` beside the training
config."""

import errno
import os
import tempfile
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from ..loggers import logger_for_run, runs_parent
from ..runs import RUN_FOLDER_ENV, claim_run_folder, remove_if_unused, run_folder_of, shared_run_folder


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
