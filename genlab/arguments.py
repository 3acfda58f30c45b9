"""What a command line names before the parser sees it: classes named by flags or config files, and the keys set.

jsonargparse keeps a *default* class's `init_args` wherever a newly named class accepts the same name (its issue
#460): with `model: ConvVAE` as a parser default, `--model VAE` trained with ConvVAE's latent 128. So genlab sets no
class default in the parser; `with_default_classes` writes `--model=ConvVAE` / `--data=Shapes` into the arguments
only when neither a flag nor a config file names a class, and every named class starts from its own signature.
"""

import json
from pathlib import Path

import yaml

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def subcommand_of(argv: list[str]) -> str | None:
    """The LightningCLI subcommand in `argv`, if any."""
    return next((a for a in argv if a in SUBCOMMANDS), None)


def config_files(argv: list[str]) -> list[dict]:
    """The contents of every `--config` / `-c` file in `argv` (files that do not parse are left to the parser)."""
    found = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag not in ("--config", "-c"):
            continue
        value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        try:
            content = yaml.safe_load(Path(value).read_text())
        except (OSError, yaml.YAMLError, ValueError):
            continue
        if isinstance(content, dict):
            found.append(content)
    return found


def config_section(content: dict, key: str, subcommand: str | None) -> object:
    """`key` of a config file, at its top level or under the subcommand (`fit: {model: ...}`)."""
    if key in content:
        return content[key]
    nested = content.get(subcommand) if subcommand else None
    return nested.get(key) if isinstance(nested, dict) else None


def names_class(argv: list[str], key: str) -> bool:
    """Whether `--key CLASS` is given, or a config file names a class for `key`."""
    if any(a == f"--{key}" or a.startswith(f"--{key}=") for a in argv):
        return True
    subcommand = subcommand_of(argv)
    for content in config_files(argv):
        section = config_section(content, key, subcommand)
        if isinstance(section, str) or (isinstance(section, dict) and "class_path" in section):
            return True
    return False


def explicit_init_args(argv: list[str], key: str) -> set[str]:
    """The names under `key` the user set: `--key.NAME`, `--key.init_args.NAME` or a config file's init_args."""
    names = set()
    for arg in argv:
        flag = arg.partition("=")[0]
        if flag.startswith(f"--{key}."):
            name = flag[len(key) + 3:].removeprefix("init_args.")
            names.add(name.partition(".")[0])
    subcommand = subcommand_of(argv)
    for content in config_files(argv):
        section = config_section(content, key, subcommand)
        if isinstance(section, dict):
            init_args = section.get("init_args", {k: v for k, v in section.items() if k != "class_path"})
            names |= set(init_args or {})
    return names


def insert_after_subcommand(argv: list[str], extra: list[str]) -> list[str]:
    """`argv` with `extra` placed right after the subcommand (or first): later flags still override them."""
    subcommand = subcommand_of(argv)
    at = argv.index(subcommand) + 1 if subcommand else 0
    return [*argv[:at], *extra, *argv[at:]]


def class_flag(key: str, class_path: str, init_args: dict | None = None) -> str:
    """`--key=CLASS`, or `--key={"class_path": ..., "init_args": ...}` to start from given values."""
    if not init_args:
        return f"--{key}={class_path}"
    return f"--{key}={json.dumps({'class_path': class_path, 'init_args': init_args})}"


def with_default_classes(argv: list[str], defaults: dict[str, str]) -> list[str]:
    """`argv` naming a class for every key of `defaults` (key -> class name) that it leaves unnamed."""
    extra = [class_flag(key, name) for key, name in defaults.items() if not names_class(argv, key)]
    return insert_after_subcommand(argv, extra) if extra else argv


def with_logger_save_dir(argv: list[str]) -> list[str]:
    """`--trainer.logger CSVLogger` (or TensorBoardLogger) without a save_dir gets an empty one, which the CLI
    replaces by the runs folder (jsonargparse refuses a logger that lacks a required argument)."""
    if any(a.partition("=")[0] == "--trainer.logger.save_dir" for a in argv):
        return argv
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        at = i + 1 if eq else i + 2
        value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        if flag == "--trainer.logger" and value.rpartition(".")[2] in ("CSVLogger", "TensorBoardLogger"):
            return [*argv[:at], "--trainer.logger.save_dir=", *argv[at:]]
    return argv
