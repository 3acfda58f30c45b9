"""Data past one machine: any genlab datamodule written once into LitData's chunked format, then streamed.

    genlab data optimize --data ImageFolder --data.root my_images/ --data.image_size 64 --output my_images_litdata/
    genlab fit --model ConvVAE --data Streaming --data.input_dir my_images_litdata/      # or s3://bucket/my_images

`optimize` (litdata_writer.py) writes each split as uint8 (C, H, W) images with int labels under `<output>/<split>`
(LitData chunks and `index.json`), then `<output>/genlab.json` (image_shape, num_classes, class_names, split sizes).
`Streaming` reads them with LitData's `StreamingDataset`/`StreamingDataLoader`. LitData rather than WebDataset: it
shards across ranks, nodes and loader workers with equal lengths, shuffles deterministically, reads items by index
(the figures' fixed images) and resumes at the exact sample from a small state dict; WebDataset leaves resuming and
equal shards to you.
"""

import json
import os
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule
from lightning.pytorch.trainer.states import TrainerStatus
from torch import Tensor

from ..errors import GenlabError
from .base import SPLIT_STAGE, STAGE_SPLITS
from .litdata_writer import FORMAT_VERSION, META_FILE, SPLITS, is_remote, litdata_modules, main, optimize

# The writer (`optimize`, and `main`: the `genlab data optimize` command) stays importable from here.
__all__ = ["Streaming", "optimize", "main", "read_metadata", "META_FILE", "FORMAT_VERSION", "SPLITS"]


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
