"""Every class the command line builds gets its own signature's defaults (jsonargparse issue #460 guard)."""

import inspect
import subprocess
import sys

import pytest
import yaml

from genlab import datamodules, models
from genlab.cli import GenlabCLI
from genlab.names import data_names, model_names

LINKED = {"image_shape", "num_classes"}  # filled from the datamodule by the CLI


class ParseOnly(GenlabCLI):
    """The CLI up to the parsed config: nothing is built."""

    def instantiate_classes(self) -> None:
        pass


def parsed(args: list[str]) -> dict:
    cli = ParseOnly(args=args, run=False)  # run=False: no subcommand, the same model/data arguments as fit
    return yaml.safe_load(cli.parser.dump(cli.config, format="yaml", skip_unset=False))


def signature_defaults(cls: type) -> dict:
    """Defaults of `cls.__init__`, following `**kwargs` up to the parent that takes them (as jsonargparse does)."""
    params = inspect.signature(cls.__init__).parameters
    inherited = {}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        parent = next(c for c in cls.__mro__[1:] if "__init__" in vars(c))
        inherited = signature_defaults(parent)
    own = {name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty}
    return {k: v for k, v in {**inherited, **own}.items() if k not in LINKED}


def as_config(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def assert_defaults(section: dict, cls: type, overrides: dict | None = None) -> None:
    expected = {k: as_config(v) for k, v in {**signature_defaults(cls), **(overrides or {})}.items()}
    got = {k: v for k, v in (section.get("init_args") or {}).items() if k not in LINKED}
    assert section["class_path"].rpartition(".")[2] == cls.__name__
    assert got == expected, f"{cls.__name__}: {got} != {expected}"


@pytest.mark.parametrize("data", data_names())
@pytest.mark.parametrize("model", model_names())
def test_print_config_equals_the_named_classes_signatures(model, data):
    required = {"CodePrior": {"vqvae_checkpoint": "vq.ckpt"}}.get(model, {})  # no default to compare
    data_required = {"Streaming": {"input_dir": "optimized/"}}.get(data, {})
    config = parsed([f"--model={model}", f"--data={data}", *[f"--model.{k}={v}" for k, v in required.items()],
                     *[f"--data.{k}={v}" for k, v in data_required.items()]])
    assert_defaults(config["model"], getattr(models, model), required)
    assert_defaults(config["data"], getattr(datamodules, data), data_required)


def test_user_values_survive_and_other_defaults_come_from_the_named_class():
    config = parsed(["--model=VAE", "--model.latent_dim=7", "--data=MNIST", "--data.batch_size=32"])
    assert_defaults(config["model"], models.VAE, {"latent_dim": 7})
    assert_defaults(config["data"], datamodules.MNIST, {"batch_size": 32})


def test_bare_command_is_convvae_on_shapes():
    config = parsed([])
    assert_defaults(config["model"], models.ConvVAE)
    assert_defaults(config["data"], datamodules.Shapes)


def test_config_file_naming_a_class_gets_that_class_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: VAE\ndata:\n  class_path: MNIST\n  init_args:\n    batch_size: 64\n")
    config = parsed([f"--config={path}"])
    assert_defaults(config["model"], models.VAE)
    assert_defaults(config["data"], datamodules.MNIST, {"batch_size": 64})


def test_user_datamodule_by_import_path_keeps_its_own_defaults(tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text(
        "from genlab.datamodules import FakeImages\n\n"
        "class Mine(FakeImages):\n"
        "    def __init__(self, size: int = 10, batch_size: int = 32) -> None:\n"
        "        super().__init__(size=size, batch_size=batch_size)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = parsed(["--data=mydata.Mine"])
    assert config["data"]["init_args"] == {"size": 10, "batch_size": 32}


def test_print_config_from_the_shell():
    out = subprocess.run([sys.executable, "-m", "genlab.cli", "fit", "--model", "VAE", "--data", "MNIST",
                          "--print_config"], capture_output=True, text=True, check=True).stdout
    config = yaml.safe_load(out)
    assert_defaults(config["model"], models.VAE)
    assert config["model"]["init_args"]["latent_dim"] == 16
