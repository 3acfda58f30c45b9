"""Finding a run folder and reading what it holds: config, logged scalars, test metrics, figures, checkpoints."""

import csv
import json
import math
import re
import warnings
from collections import defaultdict
from pathlib import Path

import yaml

MARKERS = ("config.yaml", "hparams.yaml", "metrics.csv", "events.out.tfevents.*", "figures", "checkpoints")
STAGE_ORDER = ("train", "val", "test", "")
FIGURE_ORDER = ("samples", "reconstructions", "interpolation", "traversal", "latent_pca", "latent_2d",
                "conditional", "codebook")
HIGHER_IS_BETTER = re.compile(r"acc|psnr|ssim|auroc|\bauc|f1|precision|recall|elbo|log_?lik|iou", re.IGNORECASE)
NO_BEST = re.compile(r"(^|/)(lr(-.*)?|.*_weight|epoch|step)$")  # schedules, not scores: "best" means nothing
Scalars = dict[str, list[tuple[int, float]]]  # metric name -> [(global step, value), ...]


class RunFolderError(ValueError):
    """The folder given to `genlab report` is not a run folder and holds none."""


# --- finding and reading a run -------------------------------------------------------------------------------------

def is_run(path: Path) -> bool:
    return any(any(path.glob(marker)) for marker in MARKERS)


def find_run(path: Path) -> Path:
    """`path` itself when it is a run folder, else its newest `version_N` run (also one level down)."""
    if not path.is_dir():
        raise RunFolderError(f"run folder {str(path)!r} does not exist or is not a folder")
    if is_run(path):
        return path
    runs = [p for p in [*path.glob("version_*"), *path.glob("*/version_*")] if p.is_dir() and is_run(p)]
    if not runs:
        raise RunFolderError(
            f"{str(path)!r} is not a run folder: expected config.yaml, hparams.yaml, metrics.csv, a TensorBoard "
            f"events.out.tfevents.* file, figures/ or checkpoints/ in it, or version_N subfolders holding them "
            f"(e.g. runs/lightning_logs/version_0)")
    if len({p.parent for p in runs}) == 1:
        return max(runs, key=lambda p: (version_number(p), p.stat().st_mtime))
    return max(runs, key=lambda p: (p.stat().st_mtime, version_number(p)))  # several experiment names: latest written


def version_number(path: Path) -> int:
    match = re.fullmatch(r"version_(\d+)", path.name)
    return int(match.group(1)) if match else -1


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads Lightning's `!!python/tuple` and shows any other Python tag as text, never running it."""


_Loader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node)))
_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: f"<python/{suffix}>")


def read_yaml(path: Path) -> dict:
    data = yaml.load(path.read_text(), Loader=_Loader) if path.is_file() else None
    return data if isinstance(data, dict) else {}


def read_csv_scalars(path: Path) -> tuple[Scalars, dict[int, int]]:
    """Every numeric column of a Lightning `metrics.csv` as a series over steps, plus step -> epoch."""
    scalars: Scalars = defaultdict(list)
    epochs: dict[int, int] = {}
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            step = int(float(row.get("step") or 0))
            if row.get("epoch"):
                epochs[step] = int(float(row["epoch"]))
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in (None, ""):
                    scalars[key].append((step, float(value)))
    return dict(scalars), epochs


def read_tensorboard_scalars(run: Path) -> tuple[Scalars, dict[int, int]]:
    """Every scalar tag of the run's TensorBoard event files, plus step -> epoch from Lightning's `epoch` tag."""
    try:
        from tensorboard.backend.event_processing import event_accumulator as ea
    except ImportError as error:
        raise ImportError("this run logged to TensorBoard, but the `tensorboard` package is not installed, so its "
                          "metrics cannot be read (pip install tensorboard)") from error
    accumulator = ea.EventAccumulator(str(run), size_guidance={ea.SCALARS: 0, ea.IMAGES: 1, ea.TENSORS: 1})
    accumulator.Reload()
    scalars = {tag: [(e.step, float(e.value)) for e in accumulator.Scalars(tag)]
               for tag in accumulator.Tags()["scalars"]}
    epochs = {step: int(value) for step, value in scalars.pop("epoch", [])}
    if all(value == -1 for _, value in scalars.get("hp_metric", [(0, 0)])):
        scalars.pop("hp_metric")  # Lightning's placeholder, not a measurement
    return scalars, epochs


def read_scalars(run: Path, notes: list[str]) -> tuple[Scalars, dict[int, int], str]:
    """The run's logged scalars and step -> epoch, from metrics.csv, else TensorBoard; problems go to `notes`."""
    if (run / "metrics.csv").is_file():
        return *read_csv_scalars(run / "metrics.csv"), "metrics.csv"
    if any(run.glob("events.out.tfevents.*")):
        try:
            return *read_tensorboard_scalars(run), "TensorBoard event files"
        except ImportError as error:
            notes.append(str(error))
            warnings.warn(str(error), RuntimeWarning, stacklevel=3)
    else:
        notes.append("This run has no metrics.csv and no TensorBoard event file, so there are no logged scalars to "
                     "show (a W&B-only run keeps them in W&B).")
    return {}, {}, ""


def read_test_metrics(path: Path) -> tuple[object, object] | None:
    """`test_metrics.json` as (metrics, protocol), the protocol popped from the metrics; None without the file."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    protocol = data.pop("protocol", None) if isinstance(data, dict) else None
    return data, protocol


def checkpoint_files(run: Path) -> list[Path]:
    """The run's `checkpoints/*.ckpt`, sorted by name."""
    return sorted((run / "checkpoints").glob("*.ckpt")) if (run / "checkpoints").is_dir() else []


def figure_groups(run: Path) -> dict[str, list[Path]]:
    """PNGs under figures/, grouped by their folder (the figure key) and ordered by epoch, oldest first."""
    root = run / "figures"
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in root.rglob("*.png") if root.is_dir() else ():
        groups[path.parent.relative_to(root).as_posix() if path.parent != root else "figures"].append(path)
    known = {key: i for i, key in enumerate(FIGURE_ORDER)}
    order = sorted(groups, key=lambda k: (k == "loss_curves", known.get(k, len(known)), k))  # curves come last
    return {key: sorted(groups[key], key=lambda p: (epoch_of(p), p.name)) for key in order}


def epoch_of(path: Path) -> int:
    """The epoch in a `log_figure` file name (`epoch=007.png` -> 7); -1 for other names."""
    match = re.search(r"epoch=(\d+)", path.name)
    return int(match.group(1)) if match else -1


# --- making sense of the scalars ------------------------------------------------------------------------------

def split_key(key: str) -> tuple[str, str, str]:
    """"val/loss" -> ("val", "loss", ""); "train_loss_epoch" -> ("train", "loss", "epoch"); "lr-Adam" -> ("", ...)."""
    stage, term = "", key
    for candidate in ("train", "val", "test"):
        if key.startswith((candidate + "/", candidate + "_")):
            stage, term = candidate, key[len(candidate) + 1:]
    variant = next((v for v in ("step", "epoch") if term.endswith("_" + v)), "")
    return stage, term.removesuffix("_" + variant) if variant else term, variant


def best_point(key: str, points: list[tuple[int, float]]) -> tuple[int, float] | None:
    """The (step, value) with the best value: the lowest, the highest for accuracy-like scores; None for schedules
    (learning rates, loss weights) and for series with fewer than two finite values."""
    finite = [point for point in points if math.isfinite(point[1])]
    if NO_BEST.search(key) or len(finite) < 2:
        return None
    return (max if HIGHER_IS_BETTER.search(key) else min)(finite, key=lambda point: point[1])


def sort_key(key: str) -> tuple:
    stage, term, variant = split_key(key)
    return STAGE_ORDER.index(stage), term != "loss", term, variant
