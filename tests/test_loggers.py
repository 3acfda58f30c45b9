"""Logger policy: W&B's key checked for its form before anything runs (offline, never sent), logging offline when
there is no key at all; TensorBoard/CSV writing into the run folder (tests/test_runs.py)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from lightning.pytorch.loggers import WandbLogger

from genlab.cli import main
from genlab.errors import GenlabError
from genlab.loggers import api_key_problem, wandb_mode

REPO = Path(__file__).resolve().parents[1]
CLASSIC = "0123456789abcdef0123456789abcdef01234567"  # 40 hex digits, the form of a classic key
TINY = ["fit", "--model=VAE", "--model.hidden=[8]", "--model.latent_dim=2", "--data=FakeImages",
        "--data.image_shape=[1, 8, 8]", "--data.size=16", "--data.batch_size=8", "--trainer.logger=WandbLogger",
        "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu"]


@pytest.mark.parametrize("key", [CLASSIC, "local-" + CLASSIC, "v1-" + "A_b" * 20, "aaa.bbb.ccc"])
def test_keys_of_a_valid_form_pass(key):
    assert api_key_problem(key) is None


@pytest.mark.parametrize("key, words", [("abc123", "has 6 characters"), (CLASSIC[:39], "has 39 characters"),
                                        (CLASSIC + "\n", "whitespace"), (" " + CLASSIC, "whitespace"),
                                        ("x" * 30 + "!@#$%^&*()", "only letters")])
def test_malformed_keys_say_what_is_wrong(key, words):
    assert words in api_key_problem(key)


@pytest.fixture
def no_wandb_login(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return tmp_path


@pytest.mark.parametrize("mode", [None, "online"])
def test_a_malformed_key_fails_at_once_whatever_the_mode(no_wandb_login, monkeypatch, mode):
    monkeypatch.setenv("WANDB_API_KEY", "not-a-key")
    if mode:
        monkeypatch.setenv("WANDB_MODE", mode)
    with pytest.raises(GenlabError, match=r"W&B API key in WANDB_API_KEY is malformed \(it has 5 characters"):
        wandb_mode([WandbLogger(save_dir=str(no_wandb_login))])


def test_a_malformed_key_from_wandb_login_is_named(no_wandb_login, monkeypatch):
    (no_wandb_login / "netrc").write_text("machine api.wandb.ai\n  login user\n  password short\n")
    (no_wandb_login / "netrc").chmod(0o600)
    with pytest.raises(GenlabError, match="netrc entry for api.wandb.ai"):
        wandb_mode([WandbLogger(save_dir=str(no_wandb_login))])


def test_a_key_of_valid_form_is_left_to_wandb(no_wandb_login, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", CLASSIC)
    monkeypatch.setenv("WANDB_MODE", "online")
    wandb_mode([WandbLogger(save_dir=str(no_wandb_login))])  # nothing raised, nothing contacted


def test_offline_mode_needs_no_key(no_wandb_login, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "bad")
    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb_mode([WandbLogger(save_dir=str(no_wandb_login))])


def test_a_logger_asked_to_be_offline_needs_no_key(no_wandb_login, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "bad")
    root = no_wandb_login / "runs"
    cli = main([*TINY[1:], "--trainer.logger.offline=true", f"--trainer.default_root_dir={root}"], run=False)
    assert isinstance(cli.trainer.logger, WandbLogger)


def test_the_shell_gets_one_line_at_once_and_no_run_folder(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WANDB_API_KEY": "abc", "WANDB_MODE": "online",
           "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "genlab.cli", *TINY, f"--trainer.default_root_dir={tmp_path}/runs"],
                            capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("genlab: error:")]
    assert len(errors) == 1 and "malformed" in errors[0] and "abc" not in errors[0], result.stderr[-2000:]
    assert time.monotonic() - started < 60  # no network time-outs
    assert not list((tmp_path / "runs").rglob("version_*"))
