"""One case per kind of bad input (issue #8, item 4): a one-line message naming what was wrong and what is allowed,
a non-zero exit from the shell, and no checkpoint or other file left that could break a re-run."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genlab.cli import main
from test_hostile_data import write_faces

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
FAKE = ["--data=FakeImages", "--data.image_shape=[1, 8, 8]", "--data.size=24", "--data.batch_size=8"]
VAE = ["--model=VAE", "--model.hidden=[8]", "--model.latent_dim=2"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vae")
    main(["fit", *VAE, *FAKE, *QUIET, "--trainer.max_epochs=1", "--figures=false",
          f"--trainer.default_root_dir={root}"])
    return next(root.rglob("last.ckpt"))


def write_cifar(root: Path, truncate: bool) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3]}, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(batch[: len(batch) // 2] if truncate and name == "data_batch_1" else batch)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))


def torch_save(path: Path, value: object) -> None:
    import torch

    torch.save(value, path)


def write_celeba_partition(root: Path) -> None:
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    (folder / "list_eval_partition.txt").write_text("000001.jpg 0\n")


def write_yaml(root: Path, text: str) -> str:
    (root / "config.yaml").write_text(text)
    return f"--config={root / 'config.yaml'}"


# name -> (arguments given tmp_path and the VAE checkpoint, words the message must contain)
CASES = {
    "unknown model": (lambda t, c: ["fit", "--model=ConvVAEE"], ["'ConvVAEE' is not a genlab model", "ConvVAE, "]),
    "unknown dataset": (lambda t, c: ["fit", "--data=svhn"], ["'svhn' is not a genlab dataset", "SVHN"]),
    "unknown callback": (lambda t, c: ["fit", "--trainer.callbacks+=SampleGird"],
                         ["'SampleGird' is not a known callback", "SampleGrid"]),
    "unknown logger": (lambda t, c: ["fit", "--trainer.logger=Wandb"],
                       ["'Wandb' is not a known logger", "WandbLogger"]),
    "latent_dim 0": (lambda t, c: ["fit", *VAE, "--model.latent_dim=0", *FAKE],
                     ["latent_dim=0 is invalid", "positive"]),
    "empty widths": (lambda t, c: ["fit", "--model.widths=[]", *FAKE], ["widths=[] is invalid", "non-empty"]),
    "batch_size 0": (lambda t, c: ["fit", *VAE, *FAKE, "--data.batch_size=0"], ["batch_size", ">= 1", "got 0"]),
    "max_epochs 0": (lambda t, c: ["fit", *VAE, *FAKE, "--trainer.max_epochs=0"], ["max_epochs=0 is invalid", "-1"]),
    "shape of checkpoint vs data": (lambda t, c: ["test", "--data=FakeImages", "--data.image_shape=[3, 8, 8]",
                                                  f"--ckpt_path={c}"], ["(1, 8, 8)", "(3, 8, 8)"]),
    "image size a conv stack cannot take": (
        lambda t, c: ["fit", "--model=DCGAN", *FAKE, "--data.image_shape=[1, 5, 5]"],
        ["image_shape=(1, 5, 5) is invalid", "even side"]),
    "missing dataset offline": (lambda t, c: ["fit", "--data=SVHN", f"--data.root={t}"],
                                ["SVHN", "not found", "train_32x32.mat"]),
    "truncated dataset file": (lambda t, c: write_cifar(t, truncate=True) or [
        "fit", "--data=CIFAR10", f"--data.root={t}", "--data.verify=false"], ["data_batch_1", "truncated or corrupt"]),
    "YAML that does not parse": (lambda t, c: ["fit", write_yaml(t, "model: {class_path: VAE\n")],
                                 ["not valid YAML", "line"]),
    "unknown key in YAML": (lambda t, c: ["fit", write_yaml(t, "model:\n  class_path: genlab.models.VAE\n  init_args:\n"
                                                               "    latnt_dim: 2\n")],
                            ["unknown option 'latnt_dim'", "latent_dim"]),
    "checkpoint of another model class": (lambda t, c: ["test", "--model=AE", *FAKE, f"--ckpt_path={c}"],
                                          ["checkpoint of VAE, not of AE", "--model VAE"]),
    "truncated checkpoint": (lambda t, c: (t / "cut.ckpt").write_bytes(c.read_bytes()[:500]) and [
        "test", *VAE, *FAKE, f"--ckpt_path={t / 'cut.ckpt'}"], ["cut.ckpt", "not a readable checkpoint"]),
    "batch_size larger than the dataset": (lambda t, c: ["fit", *VAE, *FAKE, "--data.batch_size=64"],
                                           ["batch_size=64", "larger than"]),
    "latent_dim not a number": (lambda t, c: ["fit", *VAE, "--model.latent_dim=abc", *FAKE],
                                ["--model.latent_dim 'abc' is not a valid value", "takes int"]),
    "latent_dim not an integer": (lambda t, c: ["fit", *VAE, "--model.latent_dim=2.5", *FAKE],
                                  ["--model.latent_dim '2.5'", "takes int"]),
    "CodePrior without its VQ-VAE": (lambda t, c: ["fit", "--model=CodePrior", *FAKE],
                                     ["--model.vqvae_checkpoint is required"]),
    "CodePrior with a missing VQ-VAE file": (lambda t, c: ["fit", "--model=CodePrior", *FAKE,
                                                           f"--model.vqvae_checkpoint={t / 'no.ckpt'}"],
                                             ["no.ckpt", "is not a file", "train a VQVAE first"]),
    "CelebA without its annotation files": (lambda t, c: write_celeba_partition(t) or [
        "fit", "--data=CelebA", f"--data.root={t}"], ["list_attr_celeba.txt", "--data.verify false"]),
    "CodePrior on a VAE checkpoint": (lambda t, c: ["fit", "--model=CodePrior", *FAKE,
                                                     f"--model.vqvae_checkpoint={c}"],
                                      ["is a checkpoint of VAE, not of a VQVAE"]),
    "checkpoint without Lightning's keys": (lambda t, c: torch_save(t / "k.ckpt", {"a": 1}) or [
        "test", *VAE, *FAKE, f"--ckpt_path={t / 'k.ckpt'}"], ["not a Lightning checkpoint", "no 'state_dict'"]),
    "random bytes as a checkpoint": (lambda t, c: (t / "r.ckpt").write_bytes(bytes(range(256)) * 20) and [
        "test", *VAE, *FAKE, f"--ckpt_path={t / 'r.ckpt'}"], ["r.ckpt", "truncated or corrupt"]),
    "val_fraction leaving too little to train on": (lambda t, c: ["fit", *VAE, *FAKE, "--data.val_fraction=0.95"],
                                                    ["val_fraction=0.95", "lower --data.batch_size"]),
    "quarter CVAE on an image with no quarter": (
        lambda t, c: ["fit", "--model=CVAE", "--model.condition=quarter", *FAKE, "--data.image_shape=[1, 1, 8]"],
        ["needs images at least 2x2", "(1, 1, 8)"]),
    "output folder that is a file": (lambda t, c: (t / "afile").write_text("x") and [
        "fit", *VAE, *FAKE, "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={t / 'afile' / 'runs'}"],
        ["afile", "Not a directory"]),
    "empty YAML": (lambda t, c: ["fit", write_yaml(t, "")], ["is empty", "--print_config"]),
    "list-shaped YAML": (lambda t, c: ["fit", write_yaml(t, "- 1\n")], ["holds a YAML list", "mapping"]),
    "module of --data missing": (lambda t, c: ["fit", "--data=nopkg.Mine"], ["no module named 'nopkg'"]),
    "class of --data missing": (lambda t, c: ["fit", "--data=genlab.datamodules.Nope"],
                                ["has no class 'Nope'", "MNIST"]),
    "checkpoint naming a foreign class": (lambda t, c: [
        "test", *FAKE, f"--ckpt_path={foreign_checkpoint(t, c)}"], ["'pwnmod.Model'", "not one of genlab's"]),
    "FreyFaces .mat of the wrong shape": (lambda t, c: write_frey(t, np.zeros((100, 7), np.uint8)) or [
        "fit", *VAE, "--data=FreyFaces", f"--data.root={t}"], ["shape (100, 7)", "(560, N)"]),
    "CelebA empty JPEG": (lambda t, c: write_faces(t, bad={3: b""}) and [
        "fit", *VAE, "--data=CelebA", f"--data.root={t}", "--data.verify=false", "--data.image_size=8",
        "--data.crop=32", "--data.batch_size=2", "--data.on_bad_file=error"],
        ["empty file (0 bytes)", "--data.on_bad_file warn"]),
}


def write_frey(root: Path, faces: np.ndarray) -> None:
    from scipy.io import savemat

    (root / "frey").mkdir()
    savemat(root / "frey" / "frey_rawface.mat", {"ff": faces})


def foreign_checkpoint(root: Path, checkpoint: Path) -> Path:
    """A weights-only checkpoint whose class path names a module that would run code on import."""
    import torch

    (root / "pwnmod.py").write_text(f"open({str(root / 'ran')!r}, 'w').write('ran')\nclass Model: pass\n")
    content = torch.load(checkpoint, weights_only=True)
    content["hyper_parameters"]["_class_path"] = "pwnmod.Model"
    torch.save(content, root / "foreign.ckpt")
    sys.path.insert(0, str(root))
    return root / "foreign.ckpt"


def test_a_checkpoint_naming_a_foreign_class_imports_nothing(tmp_path, vae_ckpt):
    path = foreign_checkpoint(tmp_path, vae_ckpt)
    for args in (["test", *FAKE, f"--ckpt_path={path}"], ["plot", f"--ckpt_path={path}", "--figure=samples"]):
        with pytest.raises(Exception, match="not one of genlab's"):
            main([*args, *QUIET, f"--trainer.default_root_dir={tmp_path / 'runs'}"] if args[0] == "test" else args)
    assert not (tmp_path / "ran").exists() and "pwnmod" not in sys.modules


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_clear_line(case, tmp_path, vae_ckpt):
    make_args, words = CASES[case]
    args = [*make_args(tmp_path, vae_ckpt), *QUIET, f"--trainer.default_root_dir={tmp_path / 'runs'}"]
    with pytest.raises(Exception) as error:  # from Python the error is raised (the shell gets one line, below)
        main(args)
    message = str(error.value)
    assert all(word in message for word in words), message
    assert "Traceback" not in message and "Given value type" not in message
    assert not list((tmp_path / "runs").rglob("*.ckpt"))  # nothing a later --ckpt_path last could pick up


@pytest.mark.parametrize("case", ["unknown key in YAML", "latent_dim 0", "truncated dataset file",
                                  "output folder that is a file"])
def test_the_shell_gets_one_error_line_and_a_nonzero_status(case, tmp_path, vae_ckpt):
    make_args, words = CASES[case]
    args = [*make_args(tmp_path, vae_ckpt), *QUIET, f"--trainer.default_root_dir={tmp_path / 'runs'}"]
    result = subprocess.run([sys.executable, "-m", "genlab.cli", *args], capture_output=True, text=True, timeout=120,
                            cwd=REPO)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("genlab: error:")]
    assert len(errors) == 1 and all(word in errors[0] for word in words), result.stderr[-2000:]


def test_wandb_online_without_a_key_fails_at_once(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    from genlab.loggers import wandb_mode
    from genlab.errors import GenlabError

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(GenlabError, match="WANDB_MODE=online but no W&B API key"):
        wandb_mode([WandbLogger(save_dir=str(tmp_path))])
