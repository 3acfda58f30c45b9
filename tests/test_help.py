"""Every model and datamodule argument has a description in the command line's help, with its allowed values when
it is a choice (the descriptions come from the docstrings' `Args:` sections, merged over each class's MRO)."""

import contextlib
import inspect
import io
import re
import typing

import pytest
from jsonargparse import ArgumentParser

from genlab import cli, datamodules, models, names
from genlab.models.flows import IAF_UPDATES
from genlab.models.gan_losses import OBJECTIVES
from genlab.models.losses import LIKELIHOODS
from genlab.models.presets import ARCHITECTURES, CONDITIONS, FLOWS, PRIORS

# str arguments whose values are checked in code, not by a Literal type
CHOICES = {"likelihood": LIKELIHOODS, "condition": CONDITIONS, "flow": FLOWS, "iaf_update": IAF_UPDATES,
           "objective": OBJECTIVES, "architecture": tuple(ARCHITECTURES), "prior": PRIORS}
CLASSES = [("model", getattr(models, name)) for name in names.model_names()] + \
          [("data", getattr(datamodules, name)) for name in names.data_names()]
IDS = [cls.__name__ for _, cls in CLASSES]


def init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """`cls.__init__`'s parameters, following `**kwargs` up the MRO to the parents that take them (as the CLI)."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        for p in params:
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                found.setdefault(p.name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return found
    return found


def descriptions(cls: type, prefix: str) -> dict[str, str]:
    """Each argument's help description, from a parser built as jsonargparse builds `--<prefix>.help <cls>`."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, prefix, fail_untyped=False, sub_configs=True)
    return {action.dest.removeprefix(f"{prefix}."): (action.help or "").strip() for action in parser._actions
            if action.dest.startswith(f"{prefix}.") and action.dest != f"{prefix}.help"}


def cli_help(prefix: str, name: str) -> str:
    """What `genlab fit --<prefix>.help <name>` prints, whitespace collapsed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        cli.main(["fit", f"--{prefix}.help", name])
    assert exit_info.value.code in (0, None)
    return " ".join(out.getvalue().split())


@pytest.mark.parametrize(("prefix", "cls"), CLASSES, ids=IDS)
def test_every_argument_is_described_in_the_cli_help(prefix: str, cls: type) -> None:
    described = descriptions(cls, prefix)
    parameters = init_parameters(cls)
    undescribed = [name for name in parameters if not described.get(name)]
    assert not undescribed, f"{cls.__name__}: no help description for {undescribed}"
    shown = cli_help(prefix, cls.__name__)
    for name in parameters:
        assert f"--{prefix}.{name} " in shown
        assert " ".join(described[name].split()) in shown, f"{cls.__name__}.{name}'s description is not in the help"


@pytest.mark.parametrize(("prefix", "cls"), CLASSES, ids=IDS)
def test_choices_list_their_allowed_values(prefix: str, cls: type) -> None:
    described = descriptions(cls, prefix)
    for name, parameter in init_parameters(cls).items():
        literal = typing.get_origin(parameter.annotation) is typing.Literal
        values = typing.get_args(parameter.annotation) if literal else CHOICES.get(name, ())
        missing = [value for value in values if f'"{value}"' not in described[name]]
        assert not missing, f"{cls.__name__}.{name}: the help does not name {missing}"


def test_likelihood_help_lists_every_likelihood() -> None:
    text = descriptions(models.VAE, "model")["likelihood"]
    assert re.findall(r'"([a-z_]+)"', text)[:len(LIKELIHOODS)] == list(LIKELIHOODS)


@pytest.mark.parametrize("cls", [models.GAN, models.DCGAN], ids=["GAN", "DCGAN"])
def test_gan_none_defaults_say_what_none_means(cls: type) -> None:
    described = descriptions(cls, "model")
    for name, parameter in init_parameters(cls).items():
        if parameter.default is None:
            assert "None: the objective's paper default" in described[name], name
