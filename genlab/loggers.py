"""Logger policy: where each logger writes, and W&B's mode and key decided before anything runs.

- TensorBoard and CSV write into the run folder `<save_dir>/<name>/version_N` the CLI claimed; W&B gets that folder
  as its `save_dir`.
- W&B with no key and no `WANDB_MODE` logs offline (`wandb sync` uploads later); online with no key, or with a key
  that cannot be one, is one line at once instead of W&B's network time-outs. The key is checked for its form only,
  offline; it is never logged or sent anywhere by genlab.
"""

import netrc
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from jsonargparse import Namespace
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from .errors import GenlabError
from .runs import version_of

RUNS_NAME = "lightning_logs"  # Lightning's own name for the experiment folder under default_root_dir
FOLDER_LOGGERS = ("TensorBoardLogger", "CSVLogger")  # loggers writing to save_dir/name/version_N
OFFLINE_MODES = ("offline", "disabled", "dryrun")
JWT = re.compile(r"[\w-]+\.[\w-]+\.[\w-]+")  # W&B's internal client tokens: header.payload.signature
MIN_SECRET_LENGTH = 40  # classic keys are 40 hex digits; newer ones are `<prefix>-<secret>`, the secret 40 or more


def logger_kind(logger: object) -> str | None:
    """The class name of a logger given in the config (None, True: Lightning's default TensorBoardLogger)."""
    if logger is None or logger is True:
        return "TensorBoardLogger"
    class_path = logger.get("class_path") if hasattr(logger, "get") else None
    return class_path.rpartition(".")[2] if isinstance(class_path, str) else None


def runs_parent(logger: object, root: Path) -> Path | None:
    """Where this logger's `version_N` folders live (`<save_dir>/<name>`), or None for a logger genlab leaves
    alone (several loggers, a custom class)."""
    kind = logger_kind(logger)
    init = (logger.get("init_args") or {}) if hasattr(logger, "get") else {}
    if kind in FOLDER_LOGGERS:
        return Path(init.get("save_dir") or root) / (init.get("name") or RUNS_NAME)
    if kind == "WandbLogger":
        return root / RUNS_NAME
    return None


def logger_for_run(logger: object, folder: Path) -> object:
    """The logger config writing into `folder`: TensorBoard/CSV at version N of it, W&B with it as save_dir."""
    kind = logger_kind(logger)
    if kind not in (*FOLDER_LOGGERS, "WandbLogger"):
        return logger
    init = dict(vars(logger.get("init_args") or Namespace())) if hasattr(logger, "get") else {}
    if kind == "WandbLogger":
        init["save_dir"] = str(folder)
    else:
        init.update(save_dir=str(folder.parent.parent), name=folder.parent.name, version=version_of(folder))
    return Namespace(class_path=f"lightning.pytorch.loggers.{kind}", init_args=Namespace(**init))


def with_logger_save_dir(argv: list[str]) -> list[str]:
    """`--trainer.logger CSVLogger` (or TensorBoardLogger) without a save_dir gets an empty one, which the CLI
    replaces by the runs folder (jsonargparse refuses a logger that lacks a required argument)."""
    if any(a.partition("=")[0] == "--trainer.logger.save_dir" for a in argv):
        return argv
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        at = i + 1 if eq else i + 2
        value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        if flag == "--trainer.logger" and value.rpartition(".")[2] in FOLDER_LOGGERS:
            return [*argv[:at], "--trainer.logger.save_dir=", *argv[at:]]
    return argv


def api_key_problem(key: str) -> str | None:
    """What makes `key` not a W&B API key by its form alone (None when it could be one)."""
    if key != key.strip():
        return "it starts or ends with whitespace"
    if JWT.fullmatch(key):
        return None
    secret = key.partition("-")[2] if "-" in key else key  # `<prefix>-<secret>` (on-premises and newer keys)
    if not re.fullmatch(r"[\w-]+", secret):
        return "it may hold only letters, digits, underscores and a prefix ending in '-'"
    if len(secret) < MIN_SECRET_LENGTH:
        return f"it has {len(secret)} characters where W&B keys have {MIN_SECRET_LENGTH} or more"
    return None


def wandb_key() -> tuple[str | None, str, str]:
    """(the W&B API key, where it comes from, the host it is for): WANDB_API_KEY, else `wandb login`'s netrc entry."""
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    if "WANDB_API_KEY" in os.environ:
        return os.environ["WANDB_API_KEY"], "WANDB_API_KEY", host
    try:
        entry = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        entry = None
    return (entry[2], f"the netrc entry for {host} (`wandb login`)", host) if entry else (None, "", host)


def offline_asked(logger: object) -> bool:
    """Whether the logger config (one logger or a list) holds a WandbLogger given `offline: true`."""
    return any(logger_kind(item) == "WandbLogger" and bool((item.get("init_args") or {}).get("offline"))
               for item in (logger if isinstance(logger, list) else [logger]))


def wandb_mode(loggers: list[Logger], offline: bool = False) -> None:
    """With a WandbLogger (not given `offline=True`): no key and no WANDB_MODE -> log offline; online without a key
    or with a malformed one -> a GenlabError now, rather than after W&B's own time-outs."""
    mode = os.environ.get("WANDB_MODE")
    if offline or not any(isinstance(logger, WandbLogger) for logger in loggers) or mode in OFFLINE_MODES:
        return
    key, source, host = wandb_key()
    if key and (problem := api_key_problem(key)):
        raise GenlabError(f"the W&B API key in {source} is malformed ({problem}); set a valid one (wandb.ai/authorize)"
                          f", or WANDB_MODE=offline to log offline and `wandb sync` later")
    if key:
        return
    if mode:  # asked for online logging with no key: say so now rather than after W&B's own time-outs
        raise GenlabError(f"WANDB_MODE={mode} but no W&B API key was found (WANDB_API_KEY, or `wandb login` for "
                          f"{host}); set one, or unset WANDB_MODE to log offline and `wandb sync` later")
    os.environ["WANDB_MODE"] = "offline"
    rank_zero_info("genlab: no W&B API key found (WANDB_API_KEY or `wandb login`): logging offline; upload later "
                   "with `wandb sync <save_dir>/wandb/offline-run-*`")

