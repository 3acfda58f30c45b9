"""Every experiment config in configs/ parses, builds its model, and completes one fast step on the real data."""

from pathlib import Path

import pytest
import torch
import yaml

from genlab.cli import main

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
# Where each dataset's files sit under the data root, and the flags the offline subsets need (see data README).
DATA = {
    "MNIST": ("MNIST/raw", []),
    "FreyFaces": ("frey", []),
    "CIFAR10": ("cifar-10-batches-py", ["--data.verify=false"]),  # a 200-image subset of data_batch_1
    "CelebA": ("celeba/img_align_celeba", ["--data.verify=false"]),  # 32 images, one annotation file
    "SVHN": ("train_32x32.mat", []),  # directly in the root, as torchvision lays it out
}
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]


def config(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def data_name(path: Path) -> str:
    return config(path)["data"]["class_path"].rpartition(".")[2]


def run_args(path: Path, root: Path, tmp_path: Path) -> list[str]:
    """The config, with the data root given and every output sent to tmp_path."""
    return ["--config", str(path), f"--data.root={root}", *DATA[data_name(path)][1],
            f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}", *QUIET]


def test_there_is_a_config_for_every_experiment():
    names = {path.stem for path in CONFIGS}
    expected = {"mnist_ae_2d", "mnist_denoising", "mnist_vae", "mnist_hvae", "mnist_cvae_labels",
                "mnist_cvae_quarter",
                "mnist_baseline_nn", "cifar10_vqvae", "cifar10_vqvae_no_commitment", "cifar10_vae_fc",
                "cifar10_convvae", "svhn_convvae", "celeba_convvae_64", "frey_convvae_bn", "frey_ae", "frey_ppca",
                "mnist_planar_flows", "mnist_gan", "mnist_kl_warmup", "mnist_free_bits", "mnist_kl_cyclical",
                "mnist_btcvae", "mnist_realnvp", "mnist_hvae_dense", "mnist_hvae_paper", "mnist_vaegan"}
    assert expected <= names, f"missing configs: {sorted(expected - names)}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_is_self_describing(path):
    """Each config names its model, data, seed and run folder, and leaves the data root to $GENLAB_DATA/--data.root."""
    cfg = config(path)
    assert cfg["model"]["class_path"].startswith("genlab.models.")
    assert cfg["data"]["class_path"].startswith("genlab.datamodules.") and data_name(path) in DATA
    assert "root" not in cfg["data"].get("init_args", {})
    assert isinstance(cfg["seed_everything"], int)
    assert cfg["trainer"]["max_epochs"] >= 1 and cfg["trainer"]["logger"]["init_args"]["name"] == path.stem


def check_built(cli: object, path: Path) -> None:
    """The objects the CLI built are the ones the config names, with its model settings."""
    cfg = config(path)
    assert type(cli.model).__name__ == cfg["model"]["class_path"].rpartition(".")[2]
    assert type(cli.datamodule).__name__ == data_name(path)
    for name, value in cfg["model"].get("init_args", {}).items():
        assert cli.model.hparams[name] == value, name


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_completes_one_fast_step(path, shared_data, tmp_path, monkeypatch):
    """One training and one validation batch on the real data; where the dataset is absent (SVHN), the config is
    still parsed and its model built (that needs no files), then the step is skipped."""
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory lands in tmp_path
    monkeypatch.setattr("sys.argv", ["genlab"])  # pytest's own flags are not the CLI's
    folder, _ = DATA[data_name(path)]
    if not (shared_data / folder).exists():
        check_built(main(run_args(path, shared_data, tmp_path), run=False), path)
        pytest.skip(f"{data_name(path)} is not in {shared_data} (no {folder}): config parsed and built, not run")
    cli = main(["fit", *run_args(path, shared_data, tmp_path), "--trainer.fast_dev_run=1", "--data.batch_size=16"])
    check_built(cli, path)
    assert cli.trainer.state.finished and cli.trainer.global_step >= 1
    val = {k: v for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    assert val and all(torch.isfinite(v).all() for v in val.values()), val
