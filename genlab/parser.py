"""`GenlabParser`: jsonargparse's parser for the `genlab` command, turning its multi-line reports into one line that
says what was wrong and what is allowed."""

import inspect
import re

from lightning.pytorch.cli import LightningArgumentParser

from .errors import UsageError


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
