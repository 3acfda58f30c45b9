"""`genlab report RUN_DIR`: one self-contained HTML page for a training run, ready to hand in or share.

The page holds the run's configuration (from `config.yaml`, else `hparams.yaml`), a table with the final and best
value of every logged scalar (from `metrics.csv` or TensorBoard event files) and of `test_metrics.json` when present,
loss curves drawn from those scalars, and every PNG under `figures/` (the latest epoch of each figure large, the
earlier ones as a strip). Images are base64-embedded and the CSS is inline: the file opens anywhere, offline.
`genlab plot` (`plot.py`, beside it) draws one figure of a trained run.
"""

import argparse
import html
from datetime import datetime
from pathlib import Path

from .page import (CSS, cards_html, checkpoints_html, config_html, curves_png, figures_html, img, metrics_html,
                   short_class, test_metrics_html)
from .read import RunFolderError, find_run, read_scalars, read_yaml

__all__ = ["RunFolderError", "find_run", "main", "render", "write_report"]


def render(run: Path) -> str:
    """The whole page for the run folder `run` (already resolved by `find_run`)."""
    notes: list[str] = []
    config, hparams = read_yaml(run / "config.yaml"), read_yaml(run / "hparams.yaml")
    scalars, epochs, source = read_scalars(run, notes)
    model, data = short_class(config.get("model")), short_class(config.get("data"))
    title = f"{model} on {data}" if isinstance(model, str) and isinstance(data, str) else "Training run"
    sections = [("summary", "Summary", cards_html(config, scalars, epochs, run) + checkpoints_html(run))]
    yaml_files = "".join(f"<details><summary>Full {name}</summary><pre>{html.escape((run / name).read_text())}</pre>"
                         f"</details>" for name in ("config.yaml", "hparams.yaml") if (run / name).is_file())
    sections.append(("config", "Configuration", config_html(config, hparams) + yaml_files))
    metrics = metrics_html(scalars, epochs, source) + test_metrics_html(run / "test_metrics.json")
    sections.append(("metrics", "Metrics", metrics or "<p class=muted>No metrics were logged.</p>"))
    if (curves := curves_png(scalars)) is not None:
        sections.append(("curves", "Loss curves", f"<p class=muted>Every logged scalar over training steps, train and "
                         f"validation on the same axes (from {html.escape(source)}).</p>"
                         f"<figure>{img(curves[0], 'loss curves', curves[1])}</figure>"))
    figures = figures_html(run)
    sections.append(("figures", "Figures", figures or "<p class=muted>This run wrote no figures.</p>"))
    nav = "".join(f'<a href="#{key}">{name}</a>' for key, name, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{name}</h2>{content}</section>' for key, name, content in sections)
    notes_html = "".join(f"<div class=note>{html.escape(note)}</div>" for note in notes)
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{html.escape(title)} · genlab report</title>'
            f"<style>{CSS}</style></head><body><header><div class=wrap><h1>{html.escape(title)}</h1>"
            f"<div class=sub>genlab run report · <code>{html.escape(str(run))}</code></div><nav>{nav}</nav></div>"
            f"</header><main class=wrap>{notes_html}{body}</main><footer class=wrap>Written by <code>genlab report"
            f"</code> on {stamp}. Self-contained: every image is embedded in this file.</footer></body></html>\n")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of `run_dir` (a run folder, or a folder of `version_N` runs: the newest is used)
    to `out` (default: `<run>/report.html`) and return its path. Raises `RunFolderError` for a folder with no run."""
    run = find_run(Path(run_dir))
    path = Path(out) if out is not None else run / "report.html"
    if path.is_dir():
        path = path / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(run), encoding="utf-8")
    return path


def main(argv: list[str]) -> None:
    """`genlab report RUN_DIR [--out FILE]`: write the run's HTML report and print its path."""
    parser = argparse.ArgumentParser(prog="genlab report", description="Write one self-contained HTML page (config, "
                                     "metrics, loss curves, figures) for a training run.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (e.g. runs/lightning_logs/version_0), or "
                        "a folder of version_N runs (the newest is reported)")
    parser.add_argument("--out", metavar="FILE", help="where to write the page (default: RUN/report.html)")
    args = parser.parse_args(argv)
    try:
        print(write_report(args.run_dir, args.out))
    except RunFolderError as error:
        parser.error(str(error))
