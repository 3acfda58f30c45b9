"""Runs that survive trouble: exact resume, Ctrl-C/SIGTERM, NaN (the guard itself: test_guard.py), malicious files,
W&B without network."""

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch
from lightning import Callback, LightningModule

from genlab.figures import log_figure
from genlab.run_control import GracefulInterrupt, NonFiniteError
from genlab.cli import main
from genlab.io import (AtomicCheckpointIO, UnsafeFileError, WeightsOnlyCheckpoint, load_checkpoint, load_pickle,
                       remove_stale_temp_files)
from genlab.models import VAE

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
TINY = {
    "ConvVAE": ["--model=ConvVAE", "--model.latent_dim=2", "--model.widths=[4, 8]", "--model.kl_warmup_steps=6"],
    "GAN": ["--model=GAN", "--model.latent_dim=2", "--model.hidden=[8]"],
}
FAKE = ["--data=FakeImages", "--data.image_shape=[1, 8, 8]", "--data.size=40", "--data.batch_size=8"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def last_ckpt(root: Path) -> Path:
    return max(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)


@pytest.mark.parametrize("model", TINY)
def test_resumed_run_ends_with_the_same_parameters(model, tmp_path):
    """4 epochs straight == 2 epochs + `--ckpt_path last` to 4: optimiser, KL warm-up step, RNG and order."""
    common = [*TINY[model], *FAKE, *QUIET, "--seed_everything=0", "--trainer.deterministic=true",
              "--trainer.log_every_n_steps=1"]
    main(["fit", *common, "--trainer.max_epochs=4", f"--trainer.default_root_dir={tmp_path / 'straight'}"])
    main(["fit", *common, "--trainer.max_epochs=2", f"--trainer.default_root_dir={tmp_path / 'resumed'}"])
    main(["fit", *common, "--trainer.max_epochs=4", f"--trainer.default_root_dir={tmp_path / 'resumed'}",
          "--ckpt_path=last"])
    straight = load_checkpoint(last_ckpt(tmp_path / "straight"))
    resumed = load_checkpoint(last_ckpt(tmp_path / "resumed"))
    assert straight["global_step"] == resumed["global_step"] > 0
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for name, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][name]), name


def run_and_signal(tmp_path: Path, signum: int, extra: list[str] = ()) -> subprocess.CompletedProcess:
    """Start a long `genlab fit` that writes a marker after its first batch, signal it there, wait for it."""
    marker = tmp_path / "started"
    args = [sys.executable, "-m", "genlab.cli", "fit", *TINY["ConvVAE"], *FAKE, *QUIET, "--trainer.max_epochs=1000",
            f"--trainer.default_root_dir={tmp_path}", "--figures=false",
            "--trainer.callbacks+=tests.test_reliability.MarkAfterFirstBatch",
            f"--trainer.callbacks.init_args.path={marker}", *extra]
    process = subprocess.Popen(args, env=ENV, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    deadline = time.monotonic() + 120
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(args, process.returncode, "", stderr)


class MarkAfterFirstBatch(Callback):
    """Touches `path` a few steps into training: the moment the test sends its signal."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= 3 and not self.path.exists():
            self.path.touch()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_epoch_saves_a_checkpoint_that_resumes(signum, tmp_path):
    result = run_and_signal(tmp_path, signum)
    assert result.returncode == 128 + signum, result.stderr[-2000:]
    assert f"stopped by {signal.Signals(signum).name}" in result.stderr and "Traceback" not in result.stderr
    saved = load_checkpoint(last_ckpt(tmp_path))
    assert saved["global_step"] >= 3
    main(["fit", *TINY["ConvVAE"], *FAKE, *QUIET, f"--trainer.max_epochs={saved['epoch'] + 2}", "--figures=false",
          f"--trainer.default_root_dir={tmp_path}", "--ckpt_path=last"])
    resumed = load_checkpoint(last_ckpt(tmp_path))
    assert resumed["global_step"] > saved["global_step"] and resumed["epoch"] == saved["epoch"] + 1
    assert not list(tmp_path.rglob("*.tmp"))  # the atomic writer left no temporary files


def test_second_ctrl_c_stops_at_once():
    guard = GracefulInterrupt()
    guard.previous = {signal.SIGINT: signal.getsignal(signal.SIGINT)}
    guard._handle(signal.SIGINT, None)  # first: only asks for a checkpoint at the end of the batch
    assert guard.pending == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        guard._handle(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers given back


def test_huge_learning_rate_stops_with_the_step_and_term_and_keeps_a_good_checkpoint(tmp_path):
    args = ["fit", "--model=VAE", "--model.hidden=[16]", "--model.latent_dim=2", "--model.lr=1e12", *FAKE, *QUIET,
            "--trainer.max_epochs=50", "--figures=false", "--checkpoint.every_n_train_steps=1",
            "--checkpoint.monitor=null",
            f"--trainer.default_root_dir={tmp_path}"]
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(NonFiniteError, match=r"non-finite .* at epoch \d+, global step \d+") as error:
        main(args)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # given back after failing
    assert "train/" in str(error.value) or "gradient of" in str(error.value) or "weights" in str(error.value)
    checkpoint = last_ckpt(tmp_path)
    assert str(checkpoint) in str(error.value)
    model = VAE.load_from_checkpoint(checkpoint, weights_only=True)
    assert all(torch.isfinite(p).all() for p in model.parameters())


class Payload:
    """Unpickling this writes a marker file: what a malicious checkpoint or dataset would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_checkpoint_is_refused_without_running_its_payload(tmp_path):
    marker, ckpt = tmp_path / "pwned", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Payload(marker)}}, ckpt)
    with pytest.raises(UnsafeFileError, match="refused to load"):
        load_checkpoint(ckpt)
    with pytest.raises(UnsafeFileError, match="refused to load"):
        main(["test", *FAKE, *QUIET, f"--ckpt_path={ckpt}", f"--trainer.default_root_dir={tmp_path}"])
    with pytest.raises(UnsafeFileError, match="refused to load"):
        main(["plot", f"--ckpt_path={ckpt}", "--figure=samples"])
    # CodePrior reads its VQ-VAE through Lightning (weights_only load): refused too, in jsonargparse's wrapping
    with pytest.raises(Exception, match="refused to load|Weights only load failed"):
        main(["fit", "--model=CodePrior", f"--model.vqvae_checkpoint={ckpt}", *FAKE, *QUIET,
              f"--trainer.default_root_dir={tmp_path}"])
    assert not marker.exists()


def test_malicious_cifar_pickle_is_refused_without_running_its_payload(tmp_path):
    folder, marker = tmp_path / "cifar-10-batches-py", tmp_path / "pwned"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps({"data": Payload(marker), "labels": [0]}))
    with pytest.raises(UnsafeFileError, match="refused"):
        load_pickle(folder / "data_batch_1")
    with pytest.raises(UnsafeFileError):
        main(["fit", "--data=CIFAR10", f"--data.root={tmp_path}", "--data.verify=false", *QUIET,
              f"--trainer.default_root_dir={tmp_path}"])
    assert not marker.exists()


def test_atomic_checkpoint_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process died half-way through writing

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, path)
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_wandb_without_key_or_mode_runs_offline(tmp_path):
    env = {k: v for k, v in ENV.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_DIR=str(tmp_path), WANDB_SILENT="true")  # no ~/.netrc key either
    args = [sys.executable, "-m", "genlab.cli", "fit", *TINY["ConvVAE"], *FAKE, *QUIET, "--trainer.max_epochs=1",
            "--figures=false", f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=WandbLogger",
            f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.project=genlab-test"]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180,
                            cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "logging offline" in result.stderr
    assert list(tmp_path.rglob("wandb/offline-run-*"))  # under the run folder the CLI claims


class TinyModel(WeightsOnlyCheckpoint, LightningModule):
    """What every genlab model is: a LightningModule that loads its checkpoints weights-only."""

    def __init__(self, size: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(size, 1)


class PlainModel(LightningModule):
    def __init__(self, size: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(size, 1)


def test_load_from_checkpoint_is_weights_only_even_when_torch_is_forced_unsafe(tmp_path, monkeypatch):
    marker, ckpt = tmp_path / "pwned", tmp_path / "evil.ckpt"
    state = {"state_dict": TinyModel().state_dict(), "hyper_parameters": {"size": 2, "x": Payload(marker)},
             "pytorch-lightning_version": "2.6.0"}
    torch.save(state, ckpt)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UnsafeFileError, match="refused to load .*evil.ckpt"):
        TinyModel.load_from_checkpoint(ckpt)
    with pytest.raises(ValueError, match="weights_only=False is refused"):
        TinyModel.load_from_checkpoint(ckpt, weights_only=False)
    assert not marker.exists()
    PlainModel.load_from_checkpoint(ckpt)  # the threat: Lightning's default load runs the payload
    assert marker.exists()
    good = tmp_path / "good.ckpt"
    torch.save({**state, "hyper_parameters": {"size": 2}}, good)
    assert torch.equal(TinyModel.load_from_checkpoint(good).layer.weight, state["state_dict"]["layer.weight"])


def test_stale_temp_files_of_a_killed_write_are_removed_on_the_next_start(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs: the writer killed by kill -9
    stale = folder / f".last.ckpt.{dead.pid}.k3x9a1b2.tmp"
    old = folder / f".best-epoch=001.ckpt.{os.getpid()}.0a1b2c3d.tmp"  # alive, but untouched for an hour
    live = folder / f".last.ckpt.{os.getpid()}.zz9y8x7w.tmp"  # a write in progress
    for path in (stale, old, live):
        path.write_bytes(b"partial")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert sorted(remove_stale_temp_files(folder)) == sorted([stale, old])
    assert live.exists()
    live.unlink()
    stale.write_bytes(b"partial")  # and the CLI clears them when the next run starts in that folder
    main(["fit", "--model=VAE", "--model.hidden=[8]", "--model.latent_dim=2", *FAKE, *QUIET, "--figures=false",
          "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}", f"--checkpoint.dirpath={folder}"])
    assert not list(folder.glob(".*.tmp")) and (folder / "last.ckpt").is_file()


def test_figures_are_written_atomically(tmp_path, monkeypatch):
    trainer = SimpleNamespace(logger=None, loggers=[], default_root_dir=str(tmp_path), current_epoch=0, global_step=0)
    path = log_figure(trainer, "samples", torch.rand(3, 8, 8))
    before = path.read_bytes()

    def killed(target, array, **kwargs):
        Path(target).write_bytes(b"")  # as if the process died half-way through writing
        raise KeyboardInterrupt

    monkeypatch.setattr(plt, "imsave", killed)
    with pytest.raises(KeyboardInterrupt):
        log_figure(trainer, "samples", torch.rand(3, 8, 8))
    assert path.read_bytes() == before and plt.imread(path).shape[:2] == (8, 8)
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.parametrize("name", ["VAE", "GAN", "Classifier", "PPCA"])
def test_every_genlab_model_loads_weights_only(name, tmp_path, monkeypatch):
    import genlab.models

    model_class = getattr(genlab.models, name)
    marker, ckpt = tmp_path / "pwned", tmp_path / "evil.ckpt"
    torch.save({"state_dict": model_class().state_dict(), "hyper_parameters": {"x": Payload(marker)},
                "pytorch-lightning_version": "2.6.0"}, ckpt)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UnsafeFileError):
        model_class.load_from_checkpoint(ckpt)
    assert not marker.exists()
