"""User-facing errors of the `genlab` command: one readable line each, saying what was wrong and what is allowed.

From the shell, `genlab` prints `genlab: error: <line>` and exits with status 2 (bad arguments) or 1; from Python,
`genlab.cli.main([...])` raises the `GenlabError` instead, so callers and tests can catch it.
"""

import inspect
import re
import traceback
from collections.abc import Iterable
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser

PACKAGE_DIR = Path(__file__).resolve().parent


class GenlabError(ValueError):
    """A mistake in what the user asked for (or in their files), with a message that says how to fix it."""

    exit_code = 1


class UsageError(GenlabError):
    """The command line or config file does not parse or names something that does not exist."""

    exit_code = 2


def public_classes(module: object, base: type, exclude: Iterable[str] = ()) -> list[str]:
    """Names a user may pass for `base` (e.g. --model, --trainer.callbacks): public, concrete subclasses in `module`."""
    return sorted(name for name in getattr(module, "__all__", ())
                  if inspect.isclass(cls := getattr(module, name, None)) and issubclass(cls, base) and cls is not base
                  and not inspect.isabstract(cls) and name not in exclude)


def check_names(args: list[str], choices: dict[str, tuple[str, list[str]]]) -> None:
    """Raise a UsageError listing the valid names when a flag in `choices` (flag -> (what, names)) names something
    that does not exist. Dotted import paths and JSON values are left to the parser."""
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        flag = flag.removesuffix("+")
        if flag not in choices:
            continue
        if not eq and i + 1 < len(args):
            value = args[i + 1]
        what, names = choices[flag]
        literal = value.lower() in ("true", "false", "null", "none")
        if value and value[0] not in "[{" and "." not in value and not literal and value not in names:
            raise UsageError(f"{flag} {value!r} is not a {what}; choose one of: {', '.join(names)} "
                             f"(or a full import path to your own class)")


class GenlabParser(LightningArgumentParser):
    """jsonargparse's parser, raising a one-line UsageError instead of printing the usage and a nested report."""

    def error(self, message: str, ex: Exception | None = None) -> None:
        if not self.exit_on_error:  # jsonargparse's inner parsers: keep its own ArgumentError flow
            super().error(message, ex)
        raise UsageError(summarize_parser_message(message)) from ex


_NOISE = ("Does not validate against any of the Union subtypes", "Expected a <class 'NoneType'>",
          "Expected a <class 'bool'>", "Expected a <class 'collections.abc.Iterable'>", "Expected a path but",
          "Subtypes:", "Errors:", "Given value type:")


def summarize_parser_message(message: str) -> str:
    """The informative part of jsonargparse's multi-line report, on one line."""
    key = re.search(r'Parser key "([^"]+)"', message)
    given = re.search(r"Given value: (.*)", message)
    if "Problems parsing config" in message:
        detail = re.sub(r'\s*in "<unicode string>",', " at", message.replace("Problems parsing config:", ""))
        return "the config file is not valid YAML: " + " ".join(detail.split())
    cls = re.search(r"class_path'?:? '([\w.]+)'", message)
    allowed = _init_args(cls.group(1)) if cls else ""
    where = f" under --{key.group(1)}" if key else ""
    if cls and (specific := _argument_problem(cls.group(1), key.group(1) if key else "model", message)):
        return specific
    option = (re.search(r"Option '([^']+)' is not accepted", message) or re.search(r"Key '([^']+)' is not expected",
                                                                                  message)
              or re.search(r"unknown option '([^']+)'", message))  # our own summary, re-wrapped by a union type
    if option:
        return f"unknown option {option.group(1)!r}{where}" + (f"; its options are: {allowed}" if allowed else "")
    lines = [line.strip(" -") for line in message.splitlines()
             if line.strip(" -") and not line.strip(" -").startswith(_NOISE) and not line.startswith("Parser key")]
    detail = lines[0] if lines else message.strip().splitlines()[0]
    if key:
        return f"--{key.group(1)}: {detail}" + (f" (got {given.group(1)})" if given and "Got value" not in detail
                                                 else "")
    return " ".join(detail.split())


def _argument_problem(class_path: str, key: str, message: str) -> str | None:
    """A bad value (`NestedArg(key=.., val=..)`) or a missing required argument of `class_path`, said plainly."""
    try:
        module, _, name = class_path.rpartition(".")
        parameters = inspect.signature(getattr(__import__(module, fromlist=[name]), name)).parameters
    except Exception:  # noqa: BLE001 - only decorates the message
        return None
    short = class_path.rpartition(".")[2]
    if bad := re.search(r"NestedArg\(key='([^']+)', val='([^']*)'\)", message):
        arg, value = bad.groups()
        hint = parameters[arg].annotation if arg in parameters else None
        kind = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
        return f"--{key}.{arg} {value!r} is not a valid value: {short}'s {arg} takes {kind}"
    given = re.search(r"init_args=Namespace\((.*)\)\)", message)
    for arg, parameter in parameters.items():
        if parameter.default is inspect.Parameter.empty and given and f"{arg}=None" in given.group(1):
            return f"--{key}.{arg} is required: {short} has no default for it"
    return None


def _init_args(class_path: str) -> str:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(__import__(module, fromlist=[name]), name)
        return ", ".join(p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs"))
    except Exception:  # noqa: BLE001 - only decorates the message
        return ""


def raised_by_genlab(error: BaseException) -> bool:
    """True when the innermost frame of `error` (or of the error it wraps) is genlab's own code: a deliberate,
    explained `raise`, as opposed to a bug deep in a library."""
    while error.__cause__ is not None:
        error = error.__cause__
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE_DIR)


def innermost_message(error: BaseException) -> str:
    """The message of the deepest error in the chain (jsonargparse wraps ours in its own reports)."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
    return " ".join(str(error).split()) or type(error).__name__
