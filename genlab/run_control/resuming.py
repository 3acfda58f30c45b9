"""Which checkpoint a command continues: with `--ckpt_path` (a file or `last`), the checkpoint is found and checked
-- its class must be genlab's own or the one named, flags that would build another model are refused -- and the
arguments are parsed again with the checkpoint's settings first and the user's flags over them."""

from collections.abc import Callable
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from ..arguments import class_flag, explicit_init_args, insert_after_subcommand, names_class
from ..errors import GenlabError
from ..io import load_checkpoint
from ..runs import (check_model_class, checkpoint_settings, find_last_checkpoint, read_run_config, run_folder_of,
                    settings_conflicts, trusted_class)

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
