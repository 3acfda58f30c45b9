"""`genlab report`: the page of a real tiny run holds every figure, the config and the metrics, and nothing external."""

import base64
import json
import re
import sys
from pathlib import Path

import pytest
from lightning import Trainer
from lightning.pytorch.loggers import CSVLogger
from tiny_data import SHAPE, TinyImages

from genlab.callbacks import default_callbacks
from genlab.cli import main as cli_main
from genlab.models import ConvVAE
from genlab.report import RunFolderError, find_run, main, write_report

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*(?!["']?(?:data:image/|#))""", re.I)  # anything but embedded / in-page


def csv_run(root: Path) -> Path:
    """Two epochs through a plain Trainer with a CSVLogger and every default figure callback: hparams.yaml only."""
    model = ConvVAE(image_shape=SHAPE, latent_dim=4, widths=(8, 16))
    trainer = Trainer(max_epochs=2, log_every_n_steps=1, accelerator="cpu", logger=CSVLogger(root),
                      callbacks=default_callbacks(model), enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=TinyImages(batch_size=8))
    return Path(trainer.log_dir)


def tensorboard_run(root: Path) -> Path:
    """Two epochs through the genlab CLI (TensorBoard logger, config.yaml, checkpoints, figure callbacks)."""
    # size and batch_size given: jsonargparse would carry Shapes' defaults (10000 images) over to TinyImages
    cli_main(["fit", f"--data={TinyImages.__module__}.TinyImages", "--data.size=16", "--data.batch_size=8",
              "--model.latent_dim=4", "--model.widths=[8, 16]", "--trainer.max_epochs=2",
              "--trainer.log_every_n_steps=1", f"--trainer.default_root_dir={root}", *QUIET])
    return next(root.glob("lightning_logs/version_*"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {"csv": csv_run(root / "csv"), "tensorboard": tensorboard_run(root / "tb")}


@pytest.fixture(scope="module")
def pages(runs) -> dict[str, str]:
    return {logger: write_report(run).read_text() for logger, run in runs.items()}


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
def test_page_embeds_every_figure_and_names_every_metric(runs, pages, logger):
    pngs = sorted((runs[logger] / "figures").rglob("*.png"))
    page = pages[logger]
    assert len(pngs) >= 10 and {p.parent.name for p in pngs} >= {"samples", "reconstructions", "loss_curves"}
    # every figure once (latest large, earlier as thumbnails) plus the loss curves drawn from the logged scalars
    assert page.count('src="data:image/png;base64,') == len(pngs) + 1
    for key in {p.parent.name for p in pngs}:
        latest = max((runs[logger] / "figures" / key).glob("*.png"))
        assert base64.b64encode(latest.read_bytes()).decode() in page  # the latest epoch: the file itself, large
        assert f"figures/{key}/epoch=" in page
    source = {"csv": "metrics.csv", "tensorboard": "TensorBoard event files"}[logger]
    assert f"From {source}." in page
    for metric in ("train/loss", "train/recon", "train/kl", "val/loss", "val/recon", "val/kl"):
        assert f"<code>{metric}</code>" in page
    assert "hp_metric" not in page  # Lightning's TensorBoard placeholder is not a measurement


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
def test_page_is_self_contained(pages, logger):
    page = pages[logger]
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert "<script" not in page and "url(" not in page and "http://" not in page and "https://" not in page


def test_page_shows_the_configuration(pages):
    page = pages["tensorboard"]  # from the CLI's config.yaml
    assert "<h3>Model: ConvVAE" in page and "<h3>Data: TinyImages" in page
    assert "<td><code>latent_dim</code></td><td><code>4</code></td>" in page
    assert "<td><code>widths</code></td><td><code>[8, 16]</code></td>" in page
    assert "<td><code>trainer.max_epochs</code></td><td><code>2</code></td>" in page
    assert "<td><code>trainer.accelerator</code></td><td><code>cpu</code></td>" in page
    assert "trainer.num_nodes" not in page.partition("<details>")[0]  # left at Lightning's default: not listed
    assert "<summary>Full config.yaml</summary>" in page
    assert "No config.yaml" in pages["csv"]  # a plain Trainer run: hparams.yaml
    assert "<td><code>latent_dim</code></td><td><code>4</code></td>" in pages["csv"]
    assert "<td><code>image_shape</code></td><td><code>[1, 16, 16]</code></td>" in pages["csv"]  # a !!python/tuple


def test_metric_table_final_best_and_test_metrics(tmp_path):
    run = tmp_path / "lightning_logs" / "version_0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,step,val/loss,val/acc,train/kl_weight,<b>x</b>,train/loss\n"
                                     "0,9,3.0,0.5,0.1,1,4\n1,19,1.0,0.9,0.5,2,3\n2,29,2.0,0.7,1.0,3,nan\n")
    (run / "test_metrics.json").write_text(json.dumps({"test/nll": 87.25, "protocol": {"num_samples": 5000}}))
    page = write_report(run).read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"<tr><td><code>(.*?)</code></td>(.*?)</tr>", page)}
    assert rows["val/loss"] == "<td class=num>2</td><td class=num>1</td><td>epoch 1, step 19</td><td class=num>3</td>"
    assert "<td class=num>0.9</td><td>epoch 1, step 19</td>" in rows["val/acc"]  # accuracy: the highest is best
    assert "<td class=num>1</td><td class=num>–</td>" in rows["train/kl_weight"]  # a schedule has no best
    assert rows["train/loss"].startswith("<td class=num>nan</td><td class=num>3</td>")  # a diverged run says so
    assert "&lt;b&gt;x&lt;/b&gt;" in rows and "<b>x</b>" not in page  # every name is escaped
    assert "<td class=num>87.25</td>" in rows["test/nll"] and "5000" in rows["num_samples"]


def test_newest_version_is_reported(tmp_path):
    for version in (0, 3, 12):
        (tmp_path / "lightning_logs" / f"version_{version}").mkdir(parents=True)
        (tmp_path / "lightning_logs" / f"version_{version}" / "metrics.csv").write_text("epoch,step,val/loss\n")
    assert find_run(tmp_path) == tmp_path / "lightning_logs" / "version_12"
    assert write_report(tmp_path / "lightning_logs") == tmp_path / "lightning_logs" / "version_12" / "report.html"


def test_not_a_run_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RunFolderError, match=rf"{re.escape(repr(str(tmp_path)))} is not a run folder: expected "
                                             r"config\.yaml, hparams\.yaml, metrics\.csv"):
        write_report(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2 and "missing' does not exist" in capsys.readouterr().err


def test_main_prints_the_written_path(runs, tmp_path, capsys):
    main([str(runs["csv"]), "--out", str(tmp_path / "page.html")])
    assert capsys.readouterr().out.strip() == str(tmp_path / "page.html") and (tmp_path / "page.html").is_file()


def test_missing_tensorboard_is_said_on_the_page(runs, tmp_path, monkeypatch):
    for name in [n for n in sys.modules if n.partition(".")[0] == "tensorboard"] + ["tensorboard"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import tensorboard...` now raises ImportError
    with pytest.warns(RuntimeWarning, match="pip install tensorboard"):
        page = write_report(runs["tensorboard"], tmp_path / "page.html").read_text()
    assert "the `tensorboard` package is not installed" in page and "<h3>Model: ConvVAE" in page
