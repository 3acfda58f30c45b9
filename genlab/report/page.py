"""The HTML pieces of a run report: tables, embedded images, the config / metrics / figures / checkpoint sections,
the summary cards, the loss-curve PNG and the inline CSS."""

import base64
import html
import inspect
import io
import json
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import yaml
from PIL import Image

from ..figures.draw import panel_figure
from ..figures.loss_curves import STAGES
from .read import (Scalars, best_point, checkpoint_files, epoch_of, figure_groups, read_test_metrics, sort_key,
                   split_key)

FIGURE_TITLES = {"latent_pca": "Latent PCA", "latent_2d": "2-D latent space", "loss_curves": "Loss curves (callback)"}
THUMB_PX = 320  # stored width of strip thumbnails; shown at half that, so they stay sharp on high-dpi screens


# --- turning it into HTML ------------------------------------------------------------------------------------------

def fmt(value: object, digits: int | None = None) -> str:
    """A config value as written (`1.0`, `null`, `[32, 64]`), or a metric rounded to `digits`, escaped for HTML."""
    if isinstance(value, bool) or value is None:
        text = {True: "true", False: "false", None: "null"}[value]
    elif isinstance(value, float):
        text = f"{value:.{digits}g}" if digits else repr(value)
    elif isinstance(value, (list, tuple, dict)):
        text = yaml.safe_dump(json.loads(json.dumps(value, default=str)), default_flow_style=True, width=10**6).strip()
    else:
        text = str(value)
    return html.escape(text)


def table(header: list[str], rows: list[list[str]], numeric: tuple[int, ...] = ()) -> str:
    """Rows of already-escaped cells; columns in `numeric` are right-aligned."""
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{html.escape(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{cell}</td>"
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def img(data: bytes, alt: str, width: int | None = None, mime: str = "image/png") -> str:
    size = f' width="{width}"' if width else ""
    return f'<img src="data:{mime};base64,{base64.b64encode(data).decode()}" alt="{html.escape(alt)}"{size}>'


def class_section(title: str, node: object) -> str:
    """A `{class_path, init_args}` config node as the class name plus a table of its arguments."""
    if not isinstance(node, dict) or "class_path" not in node:
        return f"<h3>{html.escape(title)}</h3><p><code>{fmt(node)}</code></p>"
    path = str(node["class_path"])
    rows = [[f"<code>{html.escape(str(k))}</code>", f"<code>{fmt(v)}</code>"]
            for k, v in (node.get("init_args") or {}).items()]
    return (f"<h3>{html.escape(title)}: {html.escape(path.rpartition('.')[2])} <span class=muted>{html.escape(path)}"
            f"</span></h3>" + (table(["argument", "value"], rows) if rows else "<p class=muted>no arguments</p>"))


def signature_defaults(import_path: str) -> dict[str, object]:
    """Default arguments of a class, to show only the settings a run changed; empty when it cannot be imported."""
    module, _, name = import_path.rpartition(".")
    try:
        cls = getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return {}
    return {k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}


def short_class(node: object) -> object:
    """`{class_path: a.b.C, ...}` -> "C" (lists of them too); anything else unchanged."""
    if isinstance(node, dict) and "class_path" in node:
        return str(node["class_path"]).rpartition(".")[2]
    if isinstance(node, list) and node and all(isinstance(v, dict) and "class_path" in v for v in node):
        return [short_class(v) for v in node]
    return node


def changed_settings(settings: dict, defaults: dict, prefix: str = "") -> list[list[str]]:
    """Table rows for the settings that differ from `defaults` (without defaults: those that are not null)."""
    return [[f"<code>{html.escape(prefix + str(key))}</code>", f"<code>{fmt(short_class(value))}</code>"]
            for key, value in settings.items()
            if (key not in defaults and value is not None) or (key in defaults and value != defaults[key])]


def config_html(config: dict, hparams: dict) -> str:
    if not config:
        rows = [[f"<code>{html.escape(str(k))}</code>", f"<code>{fmt(v)}</code>"]
                for k, v in hparams.items() if not str(k).startswith("_")]
        return ("<p class=muted>No config.yaml (written by the genlab CLI); hyperparameters from hparams.yaml:</p>"
                + table(["hyperparameter", "value"], rows)) if rows else "<p class=muted>No configuration found.</p>"
    parts = [f"<div class=cols><div>{class_section('Model', config.get('model'))}</div>"
             f"<div>{class_section('Data', config.get('data'))}</div></div>"]
    rows = changed_settings(config.get("trainer") or {}, signature_defaults("lightning.Trainer"), "trainer.")
    checkpoint = config.get("checkpoint")
    if isinstance(checkpoint, dict):
        defaults = signature_defaults("lightning.pytorch.callbacks.ModelCheckpoint")
        rows += changed_settings(checkpoint, defaults, "checkpoint.")
    rows += changed_settings({k: v for k, v in config.items() if k not in ("model", "data", "trainer", "checkpoint")},
                             {})
    parts.append("<h3>Training settings <span class=muted>(those that differ from Lightning's defaults)</span></h3>"
                 + table(["setting", "value"], rows))
    return "".join(parts)


def metrics_html(scalars: Scalars, epochs: dict[int, int], source: str) -> str:
    if not scalars:
        return ""
    rows = []
    for key in sorted(scalars, key=sort_key):
        points = scalars[key]
        best_at = best = "–"
        if (point := best_point(key, points)) is not None:
            step, value = point
            best = fmt(value, 5)
            best_at = (f"epoch {epochs[step]}, " if step in epochs else "") + f"step {step}"
        rows.append([f"<code>{html.escape(key)}</code>", fmt(points[-1][1], 5), best, best_at, str(len(points))])
    return (f"<p class=muted>From {html.escape(source)}. Best is the lowest value (the highest for accuracy-like "
            f"scores); weights and learning rates have none.</p>"
            + table(["metric", "final", "best", "best at", "points"], rows, numeric=(1, 2, 4)))


def test_metrics_html(path: Path) -> str:
    if (test := read_test_metrics(path)) is None:
        return ""
    data, protocol = test
    rows = [[f"<code>{html.escape(str(k))}</code>", fmt(v, 6)] for k, v in (data or {}).items()]
    out = "<h3>Test metrics <span class=muted>(test_metrics.json)</span></h3>" + table(["metric", "value"], rows, (1,))
    if isinstance(protocol, dict):
        rows = [[f"<code>{html.escape(str(k))}</code>", f"<code>{fmt(v)}</code>"] for k, v in protocol.items()]
        out += "<h3>Test protocol</h3>" + table(["setting", "value"], rows)
    return out

def curves_png(scalars: Scalars) -> tuple[bytes, int] | None:
    """One panel per term, train / val (and unstaged) series on the same axes; PNG bytes and display width."""
    panels: dict[str, list[tuple[str, str, list]]] = defaultdict(list)
    for key in sorted(scalars, key=sort_key):
        stage, term, variant = split_key(key)
        if stage != "test" and scalars[key]:
            panels[term].append((stage, variant, scalars[key]))
    if not panels:
        return None
    fig, axes = panel_figure(len(panels), 3.6, 2.7)
    for ax, (term, series) in zip(axes, panels.items()):
        for stage, variant, points in series:
            steps, values = zip(*points)
            style = {"lw": 1.2} if stage == "train" and variant != "epoch" and len(points) > 5 else {
                "lw": 1.2, "marker": "o", "ms": 3.5}
            label = (stage or "logged") + (f" ({variant})" if variant else "")
            ax.plot(steps, values, label=label, color=STAGES.get(stage, "tab:green"),
                    ls="--" if variant == "epoch" else "-", **style)
        ax.set_title(term, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=150)  # drawn at 1.5x and shown at 1x: sharp on high-dpi screens and paper
    return buffer.getvalue(), round(fig.get_size_inches()[0] * 100)


def image_width(path: Path) -> int | None:
    try:
        with Image.open(path) as image:
            return image.width
    except OSError:  # a PNG cut short by a crashed run: embed it anyway, the browser shows what it can
        return None


def thumbnail(path: Path) -> bytes:
    """A strip-sized copy of a figure (the file itself when it is small or unreadable)."""
    if (width := image_width(path)) is None or width <= THUMB_PX:
        return path.read_bytes()
    with Image.open(path) as image:
        small = image.resize((THUMB_PX, max(1, round(image.height * THUMB_PX / image.width))), Image.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    return buffer.getvalue()


def caption(path: Path) -> str:
    return f"epoch {epoch_of(path)}" if epoch_of(path) >= 0 else path.stem


def figures_html(run: Path) -> str:
    parts = []
    for key, paths in figure_groups(run).items():
        latest, earlier = paths[-1], paths[:-1]
        title = FIGURE_TITLES.get(key, key.replace("_", " ").capitalize())
        parts.append(f"<div class=fig><h3>{html.escape(title)}</h3><figure>"
                     f"{img(latest.read_bytes(), f'{title}, {caption(latest)}', image_width(latest))}<figcaption>"
                     f"{html.escape(caption(latest))} (latest) · "
                     f"<code>{html.escape(latest.relative_to(run).as_posix())}</code></figcaption></figure>")
        if earlier:
            thumbs = "".join(f"<figure>{img(thumbnail(p), f'{title}, {caption(p)}', THUMB_PX // 2)}"
                             f"<figcaption>{html.escape(caption(p))}</figcaption></figure>" for p in earlier)
            parts.append(f"<p class=muted>Earlier epochs:</p><div class=strip>{thumbs}</div>")
        parts.append("</div>")
    return "".join(parts)


def checkpoints_html(run: Path) -> str:
    files = checkpoint_files(run)
    rows = [[f"<code>{html.escape(p.name)}</code>", f"{p.stat().st_size / 2**20:.1f} MB",
             datetime.fromtimestamp(p.stat().st_mtime).strftime("%Y-%m-%d %H:%M")] for p in files]
    return table(["checkpoint", "size", "written"], rows, numeric=(1,)) if rows else ""


CSS = """
:root{--fg:#1e293b;--muted:#64748b;--line:#e2e8f0;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;background:#f1f5f9;color:var(--fg);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:13px}
.wrap{max-width:1120px;margin:0 auto;padding:0 24px}
header{background:#0f172a;color:#f8fafc;padding:26px 0 18px}
header h1{margin:0 0 4px;font-size:26px;font-weight:650}
header .sub{color:#94a3b8;font-size:13px}
nav{margin-top:14px}nav a{color:#93c5fd;text-decoration:none;margin-right:18px;font-size:14px}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:18px 24px 22px;margin:20px 0}
h2{margin:0 0 12px;font-size:19px}h3{margin:18px 0 8px;font-size:15px}
.muted{color:var(--muted);font-weight:400;font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 12px;background:#f8fafc}
.card .k{color:var(--muted);font-size:11.5px;text-transform:uppercase;letter-spacing:.05em}
.card .v{font-size:17px;font-weight:600;overflow-wrap:anywhere}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:28px}
@media (max-width:820px){.cols{grid-template-columns:1fr}}
table{border-collapse:collapse;width:100%;font-size:14px;margin:4px 0 8px}
th,td{text-align:left;padding:4px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:#f8fafc;font-weight:600;color:#334155}
.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:hover{background:#f8fafc}
details{margin-top:14px}summary{cursor:pointer;color:var(--accent)}
pre{background:#0f172a;color:#e2e8f0;padding:14px 16px;border-radius:8px;overflow:auto;max-height:600px}
figure{margin:0}figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px;background:#fff}
figcaption{color:var(--muted);font-size:12.5px;margin-top:2px}
.fig{margin-bottom:26px}.fig+.fig{border-top:1px solid var(--line)}
.strip{display:flex;flex-wrap:wrap;gap:10px}.strip figure{width:160px}.strip img{width:160px}
.note{background:#fef9c3;border:1px solid #fde047;border-radius:8px;padding:8px 14px;margin:20px 0}
footer{color:var(--muted);font-size:12.5px;padding:4px 0 30px}
@media print{body{background:#fff}header{background:#fff;color:#000}nav{display:none}
section{border:none;padding:0;break-inside:auto}.fig,table{break-inside:avoid}}
"""


def cards_html(config: dict, scalars: Scalars, epochs: dict[int, int], run: Path) -> str:
    facts = {"model": short_class(config.get("model", "–")), "data": short_class(config.get("data", "–"))}
    if epochs:
        facts["epochs"] = max(epochs.values()) + 1
    steps = [step for points in scalars.values() for step, _ in points]
    if steps:
        facts["steps"] = max(steps)
    for name in ("val/loss", "val_loss"):
        if scalars.get(name):
            facts["final " + name] = scalars[name][-1][1]
            if (point := best_point(name, scalars[name])) is not None:
                facts["best " + name] = point[1]
            break
    if "seed_everything" in config:
        facts["seed"] = config["seed_everything"]
    first = (run / "config.yaml").read_text().partition("\n")[0] if (run / "config.yaml").is_file() else ""
    if first.startswith("# lightning"):
        facts["lightning"] = first.partition("==")[2]
    return "<div class=cards>" + "".join(
        f"<div class=card><div class=k>{html.escape(k)}</div><div class=v>{fmt(v, 5)}</div></div>"
        for k, v in facts.items()) + "</div>"
