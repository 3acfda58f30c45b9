"""Run folders: one `runs/lightning_logs/version_N` per run, holding its config, curves, figures and checkpoints.

- `claim_run_folder` takes the next free `version_N` with an atomic `mkdir`, so two runs started together never
  share one.
- `find_last_checkpoint` (`--ckpt_path last`) finds the newest `last.ckpt` of the model and data asked for, whose
  recorded settings agree with the ones given on the command line.
- `settings_conflicts` compares what the user set with a checkpoint's hyperparameters: a resumed run may change
  its learning rate, not its architecture.
"""

import os
import re
import shutil
from pathlib import Path

import yaml
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from .errors import GenlabError
from .io import load_checkpoint
from .names import resolve_class

RUN_FOLDER_ENV = "GENLAB_RUN_FOLDER"  # rank 0's run folder, for the DDP ranks Lightning starts after it
MAY_CHANGE_ON_RESUME = frozenset({"lr"})
LINKED = frozenset({"image_shape", "num_classes"})  # set from the datamodule, never by the user


def version_of(folder: Path) -> int | None:
    match = re.fullmatch(r"version_(\d+)", folder.name)
    return int(match.group(1)) if match else None


def run_folder_of(checkpoint: str | Path) -> Path | None:
    """The run folder a checkpoint was written in (`.../version_N/checkpoints/x.ckpt`), if it was."""
    folder = Path(checkpoint).resolve().parent.parent
    return folder if Path(checkpoint).resolve().parent.name == "checkpoints" and version_of(folder) is not None \
        else None


def read_run_config(folder: Path | None) -> dict:
    """A run's saved `config.yaml` (the resolved command line), or {} when there is none."""
    path = folder / "config.yaml" if folder else None
    if not path or not path.is_file():
        return {}
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return {}
    return content if isinstance(content, dict) else {}


def claim_run_folder(parent: Path) -> Path:
    """Create and return `parent/version_N` for the smallest free N; `mkdir` fails if another run took it first."""
    parent.mkdir(parents=True, exist_ok=True)
    taken = [v for p in parent.iterdir() if (v := version_of(p)) is not None]
    number = max(taken, default=-1) + 1
    while True:
        folder = parent / f"version_{number}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1


def remove_if_unused(folder: Path) -> None:
    """Remove a run folder that a failed start left without checkpoints or figures."""
    if folder.is_dir() and not any((folder / name).exists() for name in ("checkpoints", "figures")):
        shutil.rmtree(folder, ignore_errors=True)


def plain(value: object) -> object:
    """Tuples as lists, recursively: a checkpoint stores (8, 16) where a config file says [8, 16]."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def settings_conflicts(hparams: dict, wanted: dict) -> tuple[list[str], list[str]]:
    """(conflicts, changes): user settings that differ from the checkpoint's, split into those that would build
    another model and those a resumed run may change (the learning rate)."""
    conflicts, changes = [], []
    for name, value in wanted.items():
        if name in hparams and plain(hparams[name]) != plain(value):
            line = f"{name}: {plain(hparams[name])} -> {plain(value)}"
            (changes if name in MAY_CHANGE_ON_RESUME else conflicts).append(line)
    return conflicts, changes


def checkpoint_settings(hparams: dict) -> dict:
    """The model settings a checkpoint records, less the class and what the CLI links from the data."""
    return {k: plain(v) for k, v in hparams.items() if not k.startswith("_") and k not in LINKED}


def trusted_class(class_path: str, named: str | None, source: object, flag: str) -> str:
    """`class_path` read from a file, returned only when importing it cannot run a stranger's code: one of genlab's
    own classes, or the class the user named on the command line. Anything else is refused before any import."""
    if class_path.startswith("genlab.") or class_path == named:
        return class_path
    raise GenlabError(f"{source} names the class {class_path!r}, which is not one of genlab's; genlab imports a class "
                      f"named in a file only when it is its own or the one given on the command line (pass "
                      f"{flag} {class_path} if you trust it)")


def same_class(path: str, other: str) -> bool:
    """Whether two import paths name one class (genlab.models.VAE is genlab.models.presets.VAE); only genlab's own
    paths, or a path equal to the other, are ever imported."""
    if path == other or not (path.startswith("genlab.") and other.startswith("genlab.")):
        return path == other
    try:
        return resolve_class(path) is resolve_class(other)
    except (ImportError, AttributeError, ValueError):
        return False


def check_model_class(path: str | Path, saved: str, named: str | None) -> None:
    """A checkpoint of another model class than the one named is refused (none named: the checkpoint's is used)."""
    if named and not same_class(saved, named):
        short = saved.rpartition(".")[2]
        raise GenlabError(f"{path} is a checkpoint of {short}, not of {named.rpartition('.')[2]}; "
                          f"pass --model {short} (or leave --model out) to load it")


def find_last_checkpoint(root: Path, model_class: str | None, data_class: str | None, wanted: dict) -> Path | None:
    """The newest `last*.ckpt` under `root` of `model_class` (any if None) trained on `data_class` (any if None)
    whose hyperparameters agree with `wanted`."""
    found = sorted((p for p in root.rglob("last*.ckpt") if p.is_file()) if root.is_dir() else [],
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for path in found:
        try:
            hparams = load_checkpoint(path).get("hyper_parameters", {})
        except GenlabError:
            continue
        if model_class and not same_class(hparams.get("_class_path") or model_class, model_class):
            continue
        data = read_run_config(run_folder_of(path)).get("data")
        saved_data = data.get("class_path") if isinstance(data, dict) else data
        if data_class and saved_data and not same_class(saved_data, data_class):
            continue
        if settings_conflicts(hparams, wanted)[0]:
            continue
        return path
    if found:
        rank_zero_info(f"genlab: --ckpt_path last: none of the {len(found)} last.ckpt under {root} is of the model, "
                       f"data and settings asked for")
    return None


def shared_run_folder() -> Path | None:
    """On a DDP rank that Lightning started (LOCAL_RANK > 0), the folder rank 0 claimed: every rank agrees."""
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get(RUN_FOLDER_ENV):
        return Path(os.environ[RUN_FOLDER_ENV])
    return None
