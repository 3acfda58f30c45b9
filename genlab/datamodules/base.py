"""ImageDataModule: the one place that knows about roots, splits, loaders and offline errors.

A dataset subclass says how to read one split of its files (`load_split`) and nothing else; this base
turns that into seeded train/val/test sets held in memory as uint8 and served by the fast path of `loader.py`:
whole batches gathered by index, converted to float images in [0, 1] per batch on the model's device.
"""

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from lightning import LightningDataModule
from lightning.pytorch.trainer.states import TrainerStatus
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import GenlabError
from .dataset_errors import READ_ERRORS, DatasetCorruptError, DatasetNotFoundError
from .in_memory import InMemoryImages
from .loader import BatchLoader, EpochOrder, ItemLoader, SkipUnreadable

# Which splits each Lightning stage needs; None (a direct call) builds everything.
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",),
                None: ("train", "val", "test")}
SPLIT_STAGE = {"train": "fit", "val": "validate", "test": "test"}


def default_root() -> Path:
    """Where datasets live unless `root` is given: $GENLAB_DATA, else ./data."""
    return Path(os.environ.get("GENLAB_DATA") or "data")


class ImageDataModule(LightningDataModule):
    """Float images in [0, 1], shape (C, H, W), served from memory; batches are (x, y) with y int64 labels (zeros
    when the dataset has none).

    Subclasses set `image_shape`, `num_classes` and `class_names` (as class attributes, or in `__init__` so the CLI
    can link them to the model before `setup`) and implement `load_split`. Without an official validation split,
    "val" is a seeded `val_fraction` of "train", the same on every run and every rank.

    Args:
        root: folder holding the dataset's files; None means `default_root()` ($GENLAB_DATA, else ./data).
        batch_size: images per batch (per process under DDP).
        num_workers: DataLoader worker processes for datasets decoded per item (CelebA without `cache`); the
            in-memory datasets gather whole batches by index and ignore it.
        val_fraction: share of "train" held out for validation (ignored when the dataset has an official val split).
        seed: fixes the train/val split and any randomness baked into the data (e.g. MNIST's fixed binarisation).
        verify: check checksums; False accepts re-packed copies whose bytes differ from the official files.
        download: fetch missing files in `prepare_data` (needs internet); never done implicitly.
        on_device: keep each whole uint8 split on the model's device (e.g. the GPU), so batches never cross the bus;
            costs the dataset's size in device memory (MNIST 47 MB, SVHN 226 MB).

    Serving: the training order is a permutation drawn from (seed, the run's `--seed_everything`, epoch) alone, so a
    resumed run sees the same batches and runs that differ in either seed see other orders (the split follows `seed`
    alone); under DDP each rank takes a disjoint block of it, all blocks of equal length. Validation and test run
    in file order. Batches leave the loader as uint8 and become float in [0, 1] in `on_after_batch_transfer`, on
    the model's device (`transform_batch`: also where MNIST's dynamic binarisation happens); iterated outside a
    running Trainer, the loaders yield float batches themselves.
    """

    image_shape: tuple[int, int, int]
    num_classes: int | None = None
    class_names: list[str] | None = None  # what label k means (legends, conditional grids); None: just k
    official_val: bool = False  # True when the dataset ships its own validation split
    on_bad_file: str = "error"  # an unreadable file met while serving (datasets decoded per item): "warn" skips it

    def __init__(self, root: str | None = None, batch_size: int = 128, num_workers: int = 0,
                 val_fraction: float = 0.1, seed: int = 0, verify: bool = True, download: bool = False,
                 on_device: bool = False) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        self.save_hyperparameters()  # the record only: under LightningCLI hparams is the leaf's config (never read it)
        self.root = Path(root).expanduser() if root else default_root()
        self.batch_size, self.num_workers, self.val_fraction = batch_size, num_workers, val_fraction
        self.seed, self.verify, self.download, self.on_device = seed, verify, download, on_device
        self.datasets: dict[str, Dataset] = {}
        self._device_copies: dict[tuple[str, str], tuple[Tensor, Tensor]] = {}
        self.split_indices: dict[str, Tensor] = {}  # positions in "train" of the random train/val split

    # ---- hooks for subclasses -------------------------------------------------------------------------------------

    def load_split(self, split: str) -> tuple[Tensor, Tensor | None]:
        """uint8 images (N, C, H, W) and int64 labels (N,) or None for `split` ("train", "test", and "val" when
        official). Raise DatasetNotFoundError, without reading anything, when files are missing."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_split(split)")

    def to_dataset(self, images: Tensor, labels: Tensor | None, split: str, rows: Tensor | None = None) -> Dataset:
        """Wrap one split's tensors (only `rows` of them, when given); override to change how items are served."""
        return InMemoryImages(images, labels, rows)

    def make_dataset(self, split: str) -> Dataset:
        """The Dataset for an official split; override only for data too big for memory (CelebA)."""
        return self.to_dataset(*self.load_split(split), split)

    def fetch(self) -> None:
        """Download the files (called by `prepare_data` only when download=True); generated data has none."""

    def transform_batch(self, x: Tensor, train: bool) -> Tensor:
        """uint8 images (B, C, H, W) -> float in [0, 1], per batch on the model's device; override for per-batch
        augmentation (`train` says whether this is a training batch)."""
        return x.float().div_(255)

    # ---- helpers for subclasses -----------------------------------------------------------------------------------

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "val", "test") if self.official_val else ("train", "test")

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"{type(self).__name__} has no split {split!r}; choose one of {', '.join(self.splits)}")

    def not_found(self, folder: Path, expected: Sequence[str], detail: str = "") -> DatasetNotFoundError:
        return DatasetNotFoundError(type(self).__name__, folder, expected, detail)

    def require(self, folder: Path, expected: Sequence[str], hint: str = "") -> None:
        """Fail fast, before any reading, when a file (or folder) in `expected` is missing from `folder`."""
        missing = [name for name in expected if not (folder / name).exists()]
        if missing:
            raise self.not_found(folder, expected, f"missing: {', '.join(missing)}" + (f"; {hint}" if hint else ""))

    @contextmanager
    def reading(self, path: Path) -> Iterator[None]:
        """Turn what a cut or damaged `path` raises while being read into a DatasetCorruptError naming it."""
        try:
            yield
        except FileNotFoundError:
            raise
        except READ_ERRORS as error:
            raise DatasetCorruptError(type(self).__name__, path, f"{type(error).__name__}: {error}") from error

    @contextmanager
    def torchvision_errors(self, folder: Path, expected: Sequence[str]) -> Iterator[None]:
        """Turn torchvision's "Dataset not found or corrupted" into a DatasetNotFoundError that says how to fix it."""
        try:
            yield
        except RuntimeError as error:
            if "not found" not in str(error) and "corrupted" not in str(error):
                raise
            hint = "the files are there but fail torchvision's checksum; pass --data.verify false for a re-packed copy"
            raise self.not_found(folder, expected, hint if self.verify else str(error)) from error

    # ---- LightningDataModule --------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        # The only place the network may be touched (rank 0 only); offline runs never reach it.
        if self.download:
            self.fetch()

    def setup(self, stage: str | None = None) -> None:
        if stage not in STAGE_SPLITS:
            raise ValueError(f"unknown stage {stage!r}; expected one of fit, validate, test, predict")
        todo = [split for split in STAGE_SPLITS[stage] if split not in self.datasets]
        if not self.official_val and ("train" in todo or "val" in todo):
            images, labels = self.load_split("train")
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
            n_val = round(len(images) * self.val_fraction)
            self.split_indices = {"train": order[n_val:], "val": order[:n_val]}
            for split, index in self.split_indices.items():  # both index one shared copy, no per-split copies
                self.datasets[split] = self.to_dataset(images, labels, split, rows=index)
        for split in todo:
            if split not in self.datasets:
                self.datasets[split] = self.make_dataset(split)
        if "train" in todo:
            self.check_batch_size()

    def check_batch_size(self) -> None:
        """batch_size must not exceed the training images each process gets (checked at setup, before training)."""
        world = self.trainer.world_size if self.trainer is not None else 1
        n_train = len(self.datasets["train"])
        if self.batch_size > n_train // world:
            per_rank = f", {n_train // world} per process on {world} processes" if world > 1 else ""
            held_out = f" after holding out val_fraction={self.val_fraction}" if self.val_fraction else ""
            raise ValueError(f"batch_size={self.batch_size} is larger than the training split of "
                             f"{type(self).__name__} ({n_train} images{held_out}{per_rank}); lower --data.batch_size"
                             + (" or --data.val_fraction" if self.val_fraction > 0.5 else ""))

    def dataset(self, split: str) -> Dataset:
        """The built Dataset for "train", "val" or "test", setting up its stage first if needed."""
        if split not in SPLIT_STAGE:
            raise ValueError(f"unknown split {split!r}; expected train, val or test")
        if split not in self.datasets:
            self.setup(SPLIT_STAGE[split])
        return self.datasets[split]

    def _driven_by_trainer(self) -> bool:
        """True while a Trainer runs with this datamodule: it then converts batches in `on_after_batch_transfer`."""
        return self.trainer is not None and self.trainer.state.status == TrainerStatus.RUNNING

    def _loader(self, split: str, shuffle: bool = False) -> BatchLoader | DataLoader | list:
        dataset = self.dataset(split)
        if len(dataset) == 0 and split == "val":
            return []  # val_fraction=0: Lightning skips a stage whose loader list is empty
        if len(dataset) == 0:
            raise ValueError(f"the {split} split of {type(self).__name__} is empty")
        driven = self._driven_by_trainer()
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if driven else (0, 1)
        order = EpochOrder(len(dataset), shuffle, self.seed, rank, world, run_seed())
        if not isinstance(dataset, InMemoryImages):  # lazily decoded (CelebA): per-item loading in workers
            return ItemLoader(dataset, batch_size=self.batch_size, sampler=order, num_workers=self.num_workers,
                              persistent_workers=self.num_workers > 0, collate_fn=self.skip_unreadable())
        images, labels, rows = dataset.source, dataset.source_labels, dataset.rows
        if self.on_device and driven:  # one device copy per decoded tensor: train and val share theirs
            device = self.trainer.strategy.root_device
            key = (id(images), str(device))
            if key not in self._device_copies:
                self._device_copies[key] = images.to(device), labels.to(device)
            images, labels = self._device_copies[key]
            rows = None if rows is None else rows.to(device)
        train = split == "train"
        convert = None if driven else lambda x, y: (self.transform_batch(x, train), y)
        return BatchLoader(images, labels, self.batch_size, order, convert, rows)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """uint8 batches from the fast path become float in [0, 1] here, on the model's device."""
        x, y = batch
        if x.dtype == torch.uint8:
            x = self.transform_batch(x, train=self.trainer is not None and self.trainer.training)
        return x, y

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")

    def val_batch(self, n: int, split: str = "val") -> tuple[Tensor, Tensor]:
        """The first n images of `split` (all of them if fewer) and their labels: the same batch on every call."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        dataset = self.dataset(split)
        if len(dataset) == 0:
            raise ValueError(f"{type(self).__name__} has no {split} images (val_fraction={self.val_fraction})")
        if isinstance(dataset, InMemoryImages):
            images, labels = dataset.head(n)
            return self.transform_batch(images, train=False), labels
        first = Subset(dataset, range(min(n, len(dataset))))
        batch = next(iter(ItemLoader(first, batch_size=len(first), collate_fn=self.skip_unreadable())), None)
        if batch is None:
            raise GenlabError(f"none of the first {len(first)} {split} images of {type(self).__name__} can be read")
        return batch[0], batch[1].long()

    def skip_unreadable(self) -> SkipUnreadable:
        """What the loaders of datasets decoded per item do with a file they cannot read (`on_bad_file`)."""
        return SkipUnreadable(self.on_bad_file, type(self).__name__)


def run_seed() -> int | None:
    """The run's global seed: what `seed_everything` (the CLI's `--seed_everything`) exported as PL_GLOBAL_SEED."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed else None
