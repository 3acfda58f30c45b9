"""One run, one folder: resuming, testing and failed starts all land in (or leave) the trained run's version_N."""

import threading

import pytest
import torch

from genlab.cli import main
from genlab.errors import GenlabError
from genlab.report.read import read_tensorboard_scalars
from genlab.runs import claim_run_folder

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
TINY_VAE = ["--model=VAE", "--model.hidden=[16]", "--model.latent_dim=2", "--data=FakeImages",
            "--data.image_shape=[1, 8, 8]", "--data.size=32", "--data.batch_size=8"]
NO_METRICS = ["--metrics.num_importance_samples=2", "--metrics.num_fid_samples=0"]


def runs(root):
    return sorted(p.name for p in (root / "lightning_logs").iterdir())


def test_resume_twice_then_test_all_in_one_folder(tmp_path):
    root = [f"--trainer.default_root_dir={tmp_path}", *QUIET]
    main(["fit", *TINY_VAE, "--trainer.max_epochs=1", *root])
    for epochs in (2, 3):  # the model and data come from the run itself
        main(["fit", "--ckpt_path=last", f"--trainer.max_epochs={epochs}", *root])
    main(["test", "--ckpt_path=last", *NO_METRICS, *root])
    assert runs(tmp_path) == ["version_0"]
    run = tmp_path / "lightning_logs" / "version_0"
    assert (run / "test_metrics.json").is_file() and (run / "config.yaml").is_file()
    assert (run / "config_test.yaml").is_file()  # the training config is kept beside it
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    steps = [step for step, _ in read_tensorboard_scalars(run)[0]["val/loss"]]
    assert len(steps) == 3 and steps == sorted(steps)  # the step axis continues across the three sessions


def test_last_picks_the_model_asked_for_not_the_newest(tmp_path):
    root = [f"--trainer.default_root_dir={tmp_path}", *QUIET]
    main(["fit", *TINY_VAE, "--trainer.max_epochs=1", *root])
    main(["fit", *[a.replace("VAE", "AE") for a in TINY_VAE], "--trainer.max_epochs=1", *root])
    cli = main(["test", "--model=VAE", "--ckpt_path=last", *NO_METRICS, *root])
    assert type(cli.model).__name__ == "VAE" and cli.config.test.ckpt_path.endswith("version_0/checkpoints/last.ckpt")
    assert runs(tmp_path) == ["version_0", "version_1"]


def test_a_flag_that_contradicts_the_checkpoint_is_refused(tmp_path):
    root = [f"--trainer.default_root_dir={tmp_path}", *QUIET]
    main(["fit", *TINY_VAE, "--model.beta=4", "--trainer.max_epochs=1", *root])
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    with pytest.raises(GenlabError, match=r"beta: 4.0 -> 1"):
        main(["fit", f"--ckpt_path={last}", "--model.beta=1", "--trainer.max_epochs=2", *root])
    # a learning rate may change on resume; the checkpoint's own settings (beta 4) are kept
    cli = main(["fit", f"--ckpt_path={last}", "--model.lr=0.0005", "--trainer.max_epochs=2", *root])
    assert cli.model.bottleneck.beta == 4.0 and cli.model.lr == 0.0005


def test_a_failed_start_leaves_no_run_folder(tmp_path):
    with pytest.raises(Exception, match="MNIST"):
        main(["fit", "--data=MNIST", f"--data.root={tmp_path / 'nowhere'}", f"--trainer.default_root_dir={tmp_path}",
              *QUIET])
    assert not (tmp_path / "lightning_logs").exists() or runs(tmp_path) == []


def test_csv_logger_needs_no_save_dir_and_writes_into_the_run(tmp_path):
    main(["fit", *TINY_VAE, "--trainer.max_epochs=1", "--trainer.logger=CSVLogger",
          f"--trainer.default_root_dir={tmp_path}", *QUIET])
    run = tmp_path / "lightning_logs" / "version_0"
    assert (run / "metrics.csv").is_file() and (run / "checkpoints" / "last.ckpt").is_file()


def test_runs_started_together_claim_different_folders(tmp_path):
    claimed = []
    threads = [threading.Thread(target=lambda: claimed.append(claim_run_folder(tmp_path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({p.name for p in claimed}) == 8
