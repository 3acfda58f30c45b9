"""The command line end to end: what a user types, what lands on disk, and the errors they get."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

from genlab.cli import main
from genlab.models import ConvVAE

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
TINY_CONV = ["--model.latent_dim=4", "--model.widths=[8, 16]"]


def write_svhn(root: Path, n: int = 24) -> None:
    """SVHN's real format: X (32, 32, 3, N) uint8, y (N, 1) with 10 standing for digit 0."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        savemat(root / f"{split}_32x32.mat", {"X": X, "y": rng.integers(1, 11, (n, 1)).astype(np.uint8)})


def checkpoints(root: Path) -> list[Path]:
    return sorted(root.rglob("*.ckpt"))


def test_fit_convvae_on_svhn_files_writes_last_checkpoint(tmp_path):
    write_svhn(tmp_path)
    main(["fit", "--model=ConvVAE", "--data=SVHN", f"--data.root={tmp_path}", "--data.verify=false",
          "--data.batch_size=8", "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}",
          *TINY_CONV, *QUIET])
    last = [p for p in checkpoints(tmp_path) if p.name == "last.ckpt"]
    assert len(last) == 1
    model = ConvVAE.load_from_checkpoint(last[0])
    assert model.image_shape == (3, 32, 32) and model.latent_dim == 4  # shape came from the data, not typed


def test_bare_fit_defaults_to_convvae_on_shapes(tmp_path):
    cli = main(["fit", "--data.size=64", "--data.batch_size=16", "--trainer.max_epochs=1",
                f"--trainer.default_root_dir={tmp_path}", *TINY_CONV, *QUIET])
    assert type(cli.model).__name__ == "ConvVAE" and type(cli.datamodule).__name__ == "Shapes"
    assert cli.model.image_shape == tuple(cli.datamodule.image_shape)
    assert any(p.name == "last.ckpt" for p in checkpoints(tmp_path))


def test_figures_every_n_epochs(tmp_path):
    main(["fit", "--data.size=64", "--data.batch_size=16", "--trainer.max_epochs=4", "--figures_every_n_epochs=2",
          f"--trainer.default_root_dir={tmp_path}", *TINY_CONV, *QUIET])
    drawn = sorted(p.name for p in tmp_path.rglob("figures/samples/*.png"))
    assert drawn == ["epoch=001.png", "epoch=003.png"]


def test_validate_and_test_from_a_checkpoint(tmp_path):
    common = ["--model=VAE", "--model.hidden=[16]", "--model.latent_dim=2", "--data=FakeImages",
              "--data.size=32", "--data.batch_size=8", f"--trainer.default_root_dir={tmp_path}", *QUIET]
    main(["fit", "--trainer.max_epochs=1", *common])
    last = next(p for p in checkpoints(tmp_path) if p.name == "last.ckpt")
    for command in ("validate", "test"):
        cli = main([command, f"--ckpt_path={last}", *common, "--metrics.num_importance_samples=4",
                    "--metrics.num_fid_samples=0"])
        stage = "val" if command == "validate" else "test"
        assert torch.isfinite(cli.trainer.callback_metrics[f"{stage}/loss"])


def test_test_prints_the_metric_table_and_the_report_shows_it(tmp_path, capsys):
    common = ["--model=VAE", "--model.hidden=[16]", "--model.latent_dim=2", "--model.likelihood=discretized_gaussian",
              "--data=FakeImages",
              "--data.image_shape=[1, 8, 8]", "--data.size=32", "--data.batch_size=8",
              f"--trainer.default_root_dir={tmp_path}", *QUIET]
    main(["fit", "--trainer.max_epochs=1", *common])
    main(["test", "--ckpt_path=last", *common, "--metrics.num_importance_samples=8", "--metrics.num_fid_samples=0"])
    table = capsys.readouterr().out
    assert all(name in table for name in ("iwae_nll", "iwae_bpd", "neg_elbo", "elbo_gap", "active_units", "psnr",
                                          "ssim"))
    run = next(p for p in checkpoints(tmp_path) if p.name == "last.ckpt").parent.parent
    metrics = json.loads((run / "test_metrics.json").read_text())  # next to the trained run, not the test run
    assert metrics["iwae_nll"] <= metrics["neg_elbo"] + 1e-4 and metrics["protocol"]["importance_samples"] == 8
    main(["report", str(run)])
    page = (run / "report.html").read_text()
    assert "iwae_nll" in page and page.count("data:image/png;base64,") >= 2


def test_config_file_round_trip(tmp_path):
    config = tmp_path / "config.yaml"
    out = subprocess.run([sys.executable, "-m", "genlab.cli", "fit", "--model=AE", "--data=FakeImages",
                          "--model.latent_dim=3", "--print_config"], capture_output=True, text=True, check=True)
    assert "class_path: genlab.models" in out.stdout and "latent_dim: 3" in out.stdout
    config.write_text(out.stdout)
    cli = main(["fit", f"--config={config}", "--data.size=16", "--data.batch_size=8", "--trainer.max_epochs=1",
                f"--trainer.default_root_dir={tmp_path}", *QUIET])
    assert type(cli.model).__name__ == "AE" and cli.model.latent_dim == 3


@pytest.mark.parametrize("flag, name, listed", [("--model", "ConvVAEE", "ConvVAE"), ("--data", "svhn", "SVHN")])
def test_unknown_names_list_the_valid_ones(flag, name, listed):
    result = subprocess.run([sys.executable, "-m", "genlab.cli", "fit", flag, name], capture_output=True, text=True)
    assert result.returncode != 0
    assert f"{flag} {name!r} is not a genlab" in result.stderr and listed in result.stderr


def test_missing_data_fails_fast_naming_folder_and_files(tmp_path):
    result = subprocess.run([sys.executable, "-m", "genlab.cli", "fit", "--data=SVHN", f"--data.root={tmp_path}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "SVHN" in result.stderr and str(tmp_path) in result.stderr and "train_32x32.mat" in result.stderr


MY_MODEL = '''
import torch
from lightning import LightningModule
from torch import nn


class MyVAE(LightningModule):
    """A model written outside genlab, known to it by nothing but its import path."""

    def __init__(self, image_shape: tuple[int, int, int] = (1, 8, 8), latent_dim: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        size = image_shape[0] * image_shape[1] * image_shape[2]
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(size, latent_dim), nn.Linear(latent_dim, size))

    def training_step(self, batch, batch_idx):
        x = batch[0]
        return ((self.net(x) - x.flatten(1)) ** 2).sum(1).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), 1e-3)
'''


def test_a_model_written_outside_genlab_trains_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "mymod.py").write_text(MY_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)  # fast_dev_run logs nowhere: the loss-curve figure lands in the current folder
    cli = main(["fit", "--model", "mymod.MyVAE", "--model.latent_dim=3", "--trainer.fast_dev_run", "1",
                "--data=FakeImages", "--data.image_shape=[1, 8, 8]", "--data.size=16", "--data.batch_size=8",
                f"--trainer.default_root_dir={tmp_path}", *QUIET])
    assert type(cli.model).__name__ == "MyVAE" and cli.model.hparams.latent_dim == 3
    assert cli.trainer.global_step == 1
    # once imported, its short name resolves too: no registry to add it to
    again = main(["fit", "--model=MyVAE", "--trainer.fast_dev_run=1", "--data=FakeImages",
                  "--data.image_shape=[1, 8, 8]", "--data.size=16", "--data.batch_size=8",
                  f"--trainer.default_root_dir={tmp_path}", *QUIET])
    assert type(again.model) is type(cli.model)
