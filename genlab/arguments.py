"""What a command line names before the parser sees it: classes named by flags or config files, and the keys set.

jsonargparse keeps a *default* class's `init_args` wherever a newly named class accepts the same name (its issue
#460): with `model: ConvVAE` as a parser default, `--model VAE` trained with ConvVAE's latent 128. So genlab sets no
class default in the parser; `with_default_classes` writes `--model=ConvVAE` / `--data=Shapes` into the arguments
only when neither a flag nor a config file names a class, and every named class starts from its own signature.
"""

import importlib
import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path

import yaml

from .errors import UsageError
from .names import check_class_names

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def subcommand_of(argv: list[str]) -> str | None:
    """The LightningCLI subcommand in `argv`, if any."""
    return next((a for a in argv if a in SUBCOMMANDS), None)


def config_files(argv: list[str]) -> list[dict]:
    """The contents of every `--config` / `-c` file in `argv` (files that do not parse are left to the parser)."""
    found = []
    for value in flag_values(argv, "--config") + flag_values(argv, "-c"):
        try:
            content = yaml.safe_load(Path(value).read_text())
        except (OSError, yaml.YAMLError, ValueError):
            continue
        if isinstance(content, dict):
            found.append(content)
    return found


def flag_values(argv: list[str], flag: str) -> list[str]:
    """The values given to `flag` (`--flag V` or `--flag=V`)."""
    values = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name == flag:
            values.append(value if eq else (argv[i + 1] if i + 1 < len(argv) else ""))
    return values


def check_config_files(argv: list[str]) -> None:
    """An empty config file, or one that is not a mapping of settings, gets one line instead of jsonargparse's."""
    for value in flag_values(argv, "--config") + flag_values(argv, "-c"):
        try:
            content = yaml.safe_load(Path(value).read_text())
        except (OSError, yaml.YAMLError, ValueError):
            continue  # missing or unparsable: the parser says so
        if content is None:
            raise UsageError(f"--config {value} is empty; write settings as YAML keys (`genlab fit --print_config` "
                             f"shows them all)")
        if not isinstance(content, dict):
            raise UsageError(f"--config {value} holds a YAML {type(content).__name__}, not a mapping of settings "
                             f"such as `model: VAE` (`genlab fit --print_config` shows them all)")


def check_import_paths(argv: list[str]) -> None:
    """`--model pkg.Class` / `--data pkg.Class`: say whether the module or the class is missing, and where."""
    on_path = os.getcwd() in sys.path or "" in sys.path
    for key in ("model", "data"):
        for value in flag_values(argv, f"--{key}"):
            if "." not in value or value.startswith(("{", "[")):
                continue
            module_name, _, name = value.rpartition(".")
            try:
                found = importlib.util.find_spec(module_name) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                where = f"the current folder ({os.getcwd()}) is on the path: put {module_name.replace('.', '/')}.py " \
                        f"there" if on_path else "run genlab from the folder that holds it"
                raise UsageError(f"--{key} {value}: no module named {module_name!r} can be imported; {where}, or "
                                 f"install the package that has it")
            module = importlib.import_module(module_name)
            if not inspect.isclass(getattr(module, name, None)):
                names = getattr(module, "__all__", None) or [n for n, v in vars(module).items()
                                                               if inspect.isclass(v) and v.__module__ == module_name]
                classes = sorted(n for n in names if inspect.isclass(getattr(module, n, None)))
                raise UsageError(f"--{key} {value}: module {module_name!r} ({module.__file__}) has no class {name!r}; "
                                 f"it defines: {', '.join(classes) or 'no classes'}")


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


def class_help(argv: list[str]) -> list[str]:
    """`fit --model VAE --help` asks for VAE's options: jsonargparse's `--model.help VAE` (likewise for --data)."""
    if not any(a in ("-h", "--help") for a in argv):
        return argv
    for key in ("model", "data"):
        for i, arg in enumerate(argv):
            flag, eq, value = arg.partition("=")
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if flag == f"--{key}" and value and not value.startswith(("-", "{")):
                subcommand = subcommand_of(argv)
                return [*([subcommand] if subcommand else []), f"--{key}.help", value]
    return argv


def checked_argv(argv: list[str]) -> list[str]:
    """`argv` with `--model X --help` turned into X's help, after the checks that say in one line what is wrong:
    class names that resolve to nothing, import paths whose module or class is missing, config files that are not
    mappings."""
    argv = class_help(argv)
    check_class_names(argv)
    check_import_paths(argv)
    check_config_files(argv)
    return argv
