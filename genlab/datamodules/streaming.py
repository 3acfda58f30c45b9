"""Data past one machine: any genlab datamodule written once into LitData's chunked format, then streamed.

    genlab data optimize --data ImageFolder --data.root my_images/ --data.image_size 64 --output my_images_litdata/
    genlab fit --model ConvVAE --data Streaming --data.input_dir my_images_litdata/      # or s3://bucket/my_images

`optimize` writes each split as uint8 (C, H, W) images with int labels under `<output>/<split>` (LitData chunks and
`index.json`), then `<output>/genlab.json` (image_shape, num_classes, class_names, split sizes). `Streaming` reads
them with LitData's `StreamingDataset`/`StreamingDataLoader`. LitData rather than WebDataset: it shards across ranks,
nodes and loader workers with equal lengths, shuffles deterministically, reads items by index (the figures' fixed
images) and resumes at the exact sample from a small state dict; WebDataset leaves resuming and equal shards to you.
"""

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule
from lightning.pytorch.trainer.states import TrainerStatus
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..errors import GenlabError
from .base import SPLIT_STAGE, STAGE_SPLITS, ImageDataModule, InMemoryImages

SPLITS = ("train", "val", "test")
META_FILE = "genlab.json"
FORMAT_VERSION = 1
DEFAULT_CHUNK_BYTES = "64MB"  # LitData's advice: tens of MB per chunk, so object-store reads stay efficient
WRITE_BATCH = 256  # images gathered at a time while writing


def litdata_modules() -> tuple[object, object]:
    """LitData's (streaming, writer) modules, imported on first use: LitData is an optional dependency. Its PyPI
    version check (a network request at every dataset) is turned off: genlab touches the network only to download."""
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
    try:
        import litdata.streaming.writer as writer
        import litdata as streaming
    except ImportError as error:
        raise GenlabError("streaming needs LitData: pip install 'genlab[streaming]' (or pip install litdata)") \
            from error
    return streaming, writer


@cache
def resumable_loader() -> type:
    """LitData's StreamingDataLoader, fixed for Lightning's mid-epoch resume: after `load_state_dict` the next pass
    continues from the saved sample, and LitData clears that mark only when a pass is exhausted. Lightning stops an
    epoch after `len(loader)` batches without exhausting it, so the epoch after a resume replayed the resumed
    epoch's order; here the mark applies to one pass only."""
    streaming, _ = litdata_modules()

    class ResumableLoader(streaming.StreamingDataLoader):
        resumed_pass_started = False

        def load_state_dict(self, obj: dict) -> None:
            super().load_state_dict(obj)
            self.resumed_pass_started = False

        def __iter__(self) -> Iterator:
            if self.restore and self.resumed_pass_started:
                self.restore = False  # the resumed pass was cut short by Lightning: start the next epoch afresh
            self.resumed_pass_started = self.restore
            return super().__iter__()

    return ResumableLoader


def is_remote(path: str) -> bool:
    """An object-store URL (s3://, gs://, azure://, r2://, hf://) or LitData's `local:` stand-in for one."""
    return "://" in path or path.startswith("local:")


# ---- writing ------------------------------------------------------------------------------------------------------

def uint8_batches(dataset: Dataset, num_workers: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """One split as uint8 (B, C, H, W) images and int64 labels, in the split's own order: gathered from memory for
    in-memory datasets, else item by item (float images in [0, 1], back to the uint8 they were decoded from)."""
    if isinstance(dataset, InMemoryImages):
        rows = torch.arange(len(dataset.source)) if dataset.rows is None else dataset.rows
        for block in rows.split(WRITE_BATCH):
            yield dataset.source[block], dataset.source_labels[block]
        return
    for x, y in DataLoader(dataset, batch_size=WRITE_BATCH, num_workers=num_workers):
        yield x.mul(255).round_().to(torch.uint8), torch.as_tensor(y, dtype=torch.long)


def optimize(datamodule: ImageDataModule, output_dir: str | Path, splits: Sequence[str] = SPLITS,
             chunk_bytes: int | str = DEFAULT_CHUNK_BYTES, progress: bool = True) -> Path:
    """Write `splits` of `datamodule` into LitData's format under `output_dir/<split>`, then `genlab.json`.

    One process writes with LitData's `BinaryWriter` (the chunks `litdata.optimize` writes): the images are decoded
    already, so there is nothing to parallelise, and `litdata.optimize`'s worker processes would each need the
    datamodule. Images are stored as the datamodule holds them (uint8); per-batch transforms such as MNIST's dynamic
    binarisation are not baked in. `output_dir` must be a new or empty local folder (copy it to an object store
    afterwards, e.g. `aws s3 sync`). Returns the folder.
    """
    if is_remote(str(output_dir)):
        raise GenlabError(f"optimize writes to a local folder, not {output_dir}; write locally, then copy the folder "
                          f"to the object store")
    output = Path(output_dir).expanduser()
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise GenlabError(f"optimize: {output} already exists and is not empty; choose a new --output folder "
                          f"(or remove that one)")
    if not splits or any(split not in SPLITS for split in splits):
        raise ValueError(f"splits must be some of {', '.join(SPLITS)}, got {list(splits)!r}")
    _, writer_module = litdata_modules()
    datamodule.prepare_data()
    batch_size, datamodule.batch_size = datamodule.batch_size, 1  # writing needs no batches: never refuse a split
    try:
        datasets = {split: datamodule.dataset(split) for split in splits}
    finally:
        datamodule.batch_size = batch_size
    sizes = {}
    for split, dataset in datasets.items():
        sizes[split] = len(dataset)
        if sizes[split] == 0:  # e.g. val_fraction=0: no folder, and Streaming serves no such split
            continue
        writer = writer_module.BinaryWriter(str(output / split), chunk_bytes=chunk_bytes)
        index = 0
        with tqdm(total=len(dataset), desc=f"writing {split}", unit="img", disable=not progress) as bar:
            for images, labels in uint8_batches(dataset, getattr(datamodule, "num_workers", 0)):
                for image, label in zip(images.numpy(), labels.tolist(), strict=True):
                    writer[index] = {"image": image, "label": label}
                    index += 1
                bar.update(len(images))
        writer.done()
        writer.merge()
    meta = {"format": FORMAT_VERSION, "image_shape": list(datamodule.image_shape),
            "num_classes": datamodule.num_classes, "class_names": datamodule.class_names, "splits": sizes,
            "source": f"{type(datamodule).__module__}.{type(datamodule).__qualname__}"}
    (output / META_FILE).write_text(json.dumps(meta, indent=1))
    return output


def main(argv: list[str]) -> Path:
    """`genlab data optimize --data NAME [--data.* ...] --output DIR [--splits train val test] [--chunk_bytes 64MB]`:
    any datamodule, with the same flags as `genlab fit`, written for `--data Streaming`."""
    from ..arguments import names_class
    from ..cli import check_class_names
    from ..errors import GenlabParser

    if argv[:1] != ["optimize"]:
        raise GenlabError(f"genlab data: unknown action {argv[0]!r}; the one action is optimize" if argv else
                          "genlab data: name an action: genlab data optimize --data NAME ... --output DIR")
    args = argv[1:]
    if not names_class(args, "data"):
        raise GenlabError("genlab data optimize: --data NAME is required (e.g. --data ImageFolder --data.root DIR)")
    check_class_names(args)
    parser = GenlabParser(prog="genlab data optimize", description=main.__doc__)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    parser.add_argument("--output", type=str | None, default=None, help="New or empty local folder to write to")
    parser.add_argument("--splits", type=list[str], default=list(SPLITS), help="Which splits to write")
    parser.add_argument("--chunk_bytes", type=int | str, default=DEFAULT_CHUNK_BYTES,
                        help="Size of LitData's chunks: bytes, or with a unit (64MB)")
    config = parser.parse_args(args)
    if not config.output:
        raise GenlabError("genlab data optimize: --output DIR is required: the new folder the chunks are written to")
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse >= 4.49
    datamodule = instantiate(config).data
    if not isinstance(datamodule, ImageDataModule):
        raise GenlabError(f"genlab data optimize: --data must be an ImageDataModule (e.g. ImageFolder, MNIST), got "
                          f"{type(datamodule).__name__}")
    output = optimize(datamodule, config.output, config.splits, config.chunk_bytes)
    print(output)
    return output


# ---- reading ------------------------------------------------------------------------------------------------------

def read_metadata(input_dir: str) -> dict:
    """`genlab.json` of an optimized folder, local or remote (fetched with LitData's own downloader)."""
    if not is_remote(input_dir):
        path = Path(input_dir) / META_FILE
        if not path.is_file():
            raise GenlabError(f"Streaming: {path} not found; write the folder with `genlab data optimize ... --output "
                              f"{input_dir}` (a folder without it is an unfinished write)")
        return json.loads(path.read_text())
    litdata_modules()
    from litdata.streaming.downloader import get_downloader

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, META_FILE)
        try:
            get_downloader(input_dir, tmp, []).download_file(f"{input_dir.rstrip('/')}/{META_FILE}", local)
            return json.loads(Path(local).read_text())
        except Exception as error:  # noqa: BLE001 - each object store raises its own types
            raise GenlabError(f"Streaming: cannot read {input_dir.rstrip('/')}/{META_FILE} ({error}); check the URL "
                              f"and credentials, and that `genlab data optimize` wrote that folder") from error


class Collate:
    """LitData items {"image": uint8 (C, H, W), "label": int} -> (images, labels); `to_float` also converts the images
    to float in [0, 1] (for loaders iterated outside a Trainer, which otherwise converts on the model's device)."""

    def __init__(self, to_float: bool) -> None:
        self.to_float = to_float

    def __call__(self, items: list[dict]) -> tuple[Tensor, Tensor]:
        images = torch.from_numpy(np.stack([np.asarray(item["image"]) for item in items]))
        labels = torch.tensor([int(item["label"]) for item in items], dtype=torch.long)
        return (images.float().div_(255) if self.to_float else images), labels


class Streaming(LightningDataModule):
    """Images written by `optimize` (`genlab data optimize`), streamed with LitData: float images in [0, 1], batches
    (x, y) like every genlab datamodule, with `image_shape`, `num_classes` and `class_names` read from the folder's
    `genlab.json` at construction (so the CLI links them to the model before `setup`; for a remote folder that
    file is downloaded then).

    Training data is sharded over every DDP rank and node (each gets the same number of samples; LitData drops the
    remainder), reshuffled each epoch from `seed`, and resumes mid-epoch from a checkpoint at the next sample.
    Validation and test are read in order (also sharded under DDP). Batches cross to the device as uint8 and become
    float there, in `on_after_batch_transfer`.

    Args:
        input_dir: the folder `optimize` wrote: a local path, or an object-store URL (s3://, gs://, azure://, r2://)
            read with LitData's clients and their usual credentials.
        batch_size: images per batch (per process under DDP).
        num_workers: loader processes per training process; LitData splits the chunks among them.
        seed: the shuffling seed.
        cache_dir: where LitData keeps downloaded chunks of a remote folder (None: LitData's default); local folders
            are read in place.
        max_cache_size: how much of a remote folder LitData keeps on local disk, e.g. "50GB" (None: its default).
    """

    def __init__(self, input_dir: str, batch_size: int = 128, num_workers: int = 0, seed: int = 0,
                 cache_dir: str | None = None, max_cache_size: str | None = None) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        self.save_hyperparameters()
        remote = is_remote(input_dir)
        self.input_dir = input_dir.rstrip("/") if remote else str(Path(input_dir).expanduser().resolve())
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.cache_dir, self.max_cache_size = cache_dir, max_cache_size
        meta = read_metadata(self.input_dir)
        if meta.get("format") != FORMAT_VERSION:
            raise GenlabError(f"Streaming: {input_dir} has format {meta.get('format')!r}; this genlab reads format "
                              f"{FORMAT_VERSION} (write it again with genlab data optimize)")
        self.image_shape = tuple(int(d) for d in meta["image_shape"])
        self.num_classes, self.class_names = meta["num_classes"], meta["class_names"]
        self.split_sizes: dict[str, int] = meta["splits"]
        self.datasets: dict[str, object] = {}
        self._figure_batch: tuple[Tensor, Tensor] | None = None

    def stream(self, split: str, shuffle: bool) -> object:
        """A LitData StreamingDataset over one split (it detects the DDP rank and world size when created)."""
        streaming, _ = litdata_modules()
        cache_dir = None if self.cache_dir is None else os.path.join(self.cache_dir, split)
        return streaming.StreamingDataset(f"{self.input_dir}/{split}", cache_dir=cache_dir, shuffle=shuffle,
                                          seed=self.seed, max_cache_size=self.max_cache_size)

    def setup(self, stage: str | None = None) -> None:
        if stage not in STAGE_SPLITS:
            raise ValueError(f"unknown stage {stage!r}; expected one of fit, validate, test, predict")
        for split in STAGE_SPLITS[stage]:
            if split not in self.datasets and self.split_sizes.get(split, 0) > 0:
                self.datasets[split] = self.stream(split, shuffle=split == "train")

    def dataset(self, split: str) -> object | None:
        """The StreamingDataset of "train", "val" or "test" (None when the folder has no such split)."""
        if split not in SPLIT_STAGE:
            raise ValueError(f"unknown split {split!r}; expected train, val or test")
        if split not in self.datasets:
            self.setup(SPLIT_STAGE[split])
        return self.datasets.get(split)

    def _loader(self, split: str) -> object:
        dataset = self.dataset(split)
        if dataset is None and split == "val":
            return []  # Lightning skips validation
        if dataset is None:
            raise GenlabError(f"Streaming: {self.input_dir} holds no {split} split (it has "
                              f"{', '.join(s for s, n in self.split_sizes.items() if n)})")
        driven = self.trainer is not None and self.trainer.state.status == TrainerStatus.RUNNING
        return resumable_loader()(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                                  collate_fn=Collate(to_float=not driven))

    def train_dataloader(self) -> object:
        return self._loader("train")

    def val_dataloader(self) -> object:
        return self._loader("val")

    def test_dataloader(self) -> object:
        return self._loader("test")

    def predict_dataloader(self) -> object:
        return self._loader("test")

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        x, y = batch
        return (x.float().div_(255) if x.dtype == torch.uint8 else x), y

    def val_batch(self, n: int) -> tuple[Tensor, Tensor]:
        """The first n validation images (test images when there is no val split) and labels, the same on every
        call: what the figure callbacks draw. Read by index from a stream of their own, apart from the loaders."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        if self._figure_batch is None or len(self._figure_batch[0]) < n:
            split = "val" if self.split_sizes.get("val", 0) else "test"
            if not self.split_sizes.get(split, 0):
                raise GenlabError(f"Streaming: {self.input_dir} has no val or test images to draw figures from")
            dataset = self.stream(split, shuffle=False)
            count = min(max(n, self.batch_size), self.split_sizes[split])
            self._figure_batch = Collate(to_float=True)([dataset[i] for i in range(count)])
        x, y = self._figure_batch
        return x[:n], y[:n]
