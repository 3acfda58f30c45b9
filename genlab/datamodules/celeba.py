"""CelebA aligned faces from `root/celeba/`: 200k JPEGs, too many to hold in memory, decoded lazily per item or
once into a memory-mapped uint8 cache (`cache=True`) from which batches are gathered by index. Unreadable (cut,
empty) JPEGs are skipped with one warning each, or stop the run with one line (`on_bad_file`), on either path."""

import os
import warnings
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision import datasets, transforms
from torchvision.datasets.celeba import CSV

from .base import ImageDataModule
from .cache import DECODE_ERRORS, DecodedImages, check_bad_files, decoded_images, default_cache_dir
from .in_memory import InMemoryImages
from .loader import Unreadable

PARTITION = "list_eval_partition.txt"


class _CelebAFiles(datasets.CelebA):
    """torchvision's CelebA serving images only, as (float image in [0, 1], 0).

    Annotation files are md5-checked by torchvision when verifying but never parsed (no targets are served); with
    verify=False only the partition file and the images are needed, and listed images that are absent are skipped.
    """

    def __init__(self, root: str, split: str, verify: bool, transform: transforms.Compose) -> None:
        self.verify = verify
        super().__init__(root, split=split, target_type=[], transform=transform)
        present = set(os.listdir(self.image_folder))
        self.listed = len(self.filename)
        self.filename = [name for name in self.filename if name in present]

    @property
    def image_folder(self) -> Path:
        return Path(self.root) / self.base_folder / "img_align_celeba"

    def _check_integrity(self) -> bool:
        if self.verify:
            return super()._check_integrity()
        return (Path(self.root) / self.base_folder / PARTITION).is_file() and self.image_folder.is_dir()

    def _load_csv(self, filename: str, header: int | None = None) -> CSV:
        if filename != PARTITION:  # unused targets: an empty column block keeps torchvision's indexing working
            return CSV([], [], torch.zeros(self.rows, 0, dtype=torch.long))
        # Same result as torchvision's csv parse of the 202,599 lines, but about ten times faster.
        lines = (Path(self.root) / self.base_folder / filename).read_text().split()
        names, parts = lines[0::2], [int(part) for part in lines[1::2]]
        self.rows = len(names)
        return CSV([], names, torch.tensor(parts).unsqueeze(1))

    def __len__(self) -> int:
        return len(self.filename)

    def read(self, index: int) -> tuple[Tensor, int] | Unreadable:
        """Item `index`, or `Unreadable` (its path and why) when its file cannot be decoded."""
        path = self.image_folder / self.filename[index]
        try:
            return self.transform(read_rgb(path)), 0
        except DECODE_ERRORS as error:
            return Unreadable(str(path), f"{type(error).__name__}: {error}")

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        item = self.read(index)
        if isinstance(item, Unreadable):
            raise item.error()
        return item

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, int] | Unreadable]:
        """A batch's items for the DataLoader, unreadable ones included as `Unreadable` (see `SkipUnreadable`)."""
        return [self.read(index) for index in indices]


class CelebA(ImageDataModule):
    """CelebA faces, centre-cropped to `crop` pixels then resized to `image_size`: (3, image_size, image_size).

    Uses the official train/valid/test partition ("valid" is served as "val"). An official split with no image
    present (e.g. a train-only subset) is replaced, with a warning, by a seeded `val_fraction` of train. Needs
    `celeba/img_align_celeba/*.jpg` and `celeba/list_eval_partition.txt`, plus torchvision's four other annotation
    files when verify=True.

    Args:
        image_size: side of the square images served, in pixels.
        crop: side of the centre crop taken from the 178x218 aligned images before resizing, in pixels.
        cache: decode every image once (in parallel) into a uint8 memmap under `cache_dir` (default
            `root/celeba/img_align_celeba/.genlab_cache`) and serve batches from it by index, as the in-memory
            datasets are; full CelebA is 2.5 GB at 64 px, 10 GB at 128 px, on disk, not in RAM. False: decode each
            image every time it is served, in `num_workers` DataLoader workers.
        cache_dir: folder of the decoded cache; None: `root/celeba/img_align_celeba/.genlab_cache`.
        on_bad_file: a JPEG that cannot be decoded (cut, empty): "warn" leaves it out (one warning naming it; with
            `cache`, of every split, else of the batch it was met in), "error" stops with one line naming it.
    """

    official_val = True

    def __init__(self, image_size: int = 64, crop: int = 148, cache: bool = False, cache_dir: str | None = None,
                 on_bad_file: Literal["warn", "error"] = "warn", **kwargs) -> None:
        super().__init__(**kwargs)
        if on_bad_file not in ("warn", "error"):
            raise ValueError(f"on_bad_file must be warn or error, got {on_bad_file!r}")
        self.on_bad_file = on_bad_file
        self._official: dict[str, _CelebAFiles] = {}
        self._held_out: dict[str, Tensor] | None = None
        if image_size < 1 or crop < 1:
            raise ValueError(f"image_size and crop must be >= 1, got image_size={image_size!r}, crop={crop!r}")
        self.image_size, self.crop = image_size, crop
        self.cache, self.cache_dir = cache, Path(cache_dir).expanduser() if cache_dir else None
        self.image_shape = (3, image_size, image_size)

    def load_split(self, split: str) -> tuple[Tensor, None]:
        raise NotImplementedError("CelebA decodes its JPEGs lazily, per item; use make_dataset(split) instead")

    def official(self, split: str) -> _CelebAFiles:
        """The images of an official split that are present (possibly none), read once and cached."""
        self.check_split(split)
        if split not in self._official:
            folder = self.root / datasets.CelebA.base_folder
            annotations = [name for _, _, name in datasets.CelebA.file_list if name.endswith(".txt")]
            expected = ["img_align_celeba/", *(annotations if self.verify else [PARTITION])]
            absent = [name for name in annotations if name != PARTITION and not (folder / name).is_file()]
            if self.verify and absent and (folder / PARTITION).is_file():
                raise self.not_found(folder, expected, f"{', '.join(absent)} missing; they are only checksummed, "
                                                       f"never read: --data.verify false needs just img_align_celeba/ "
                                                       f"and {PARTITION}")
            self.require(folder, expected)
            transform = transforms.Compose([transforms.CenterCrop(self.crop),
                                            transforms.Resize(self.image_size, antialias=True),
                                            transforms.ToTensor()])
            name = {"train": "train", "val": "valid", "test": "test"}[split]
            with self.torchvision_errors(folder, expected):
                dataset = _CelebAFiles(str(self.root), name, self.verify, transform)
            missing = dataset.listed - len(dataset)
            if len(dataset) == 0 and split == "train":  # nothing to train on (or to hold out from)
                raise self.not_found(folder, expected, f"the train split is empty: none of the {dataset.listed} "
                                                       f"'train' images listed in {PARTITION} is in img_align_celeba/")
            if missing and self.verify:
                raise self.not_found(folder, expected, f"{missing} of the {dataset.listed} '{name}' images listed "
                                                       f"in {PARTITION} are missing; --data.verify false uses those "
                                                       f"present")
            if missing and len(dataset):
                warnings.warn(f"CelebA: using the {len(dataset)} of {dataset.listed} {name} images present in "
                              f"{folder}", stacklevel=2)
            self._official[split] = dataset
        return self._official[split]

    def held_out(self) -> dict[str, Tensor]:
        """Positions in the official train split: "train" kept, and "val"/"test" held out (a seeded
        `val_fraction` each) for every official split with no image present; computed (and warned about) once."""
        if self._held_out is not None:
            return self._held_out
        n = len(self.official("train"))
        empty = [split for split in ("val", "test") if len(self.official(split)) == 0]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        n_out = max(1, round(n * self.val_fraction)) if n > len(empty) else 0
        parts = {split: order[k * n_out:(k + 1) * n_out] for k, split in enumerate(empty)}
        parts["train"] = order[len(empty) * n_out:]
        for split in empty:
            warnings.warn(f"CelebA: the official {split} split has no images in {self.root}; using a seeded "
                          f"{len(parts[split])} of the {n} train images instead (val_fraction={self.val_fraction})",
                          stacklevel=2)
        self._held_out = parts
        return parts

    def make_dataset(self, split: str) -> Dataset:
        """The official split, or, when it (or another split) is empty, the seeded share of train given by
        `held_out`; train then loses the images held out."""
        dataset = self.official(split)
        if split == "train" or len(dataset) == 0:
            parts = self.held_out()
            if len(parts) > 1:  # some official split is empty
                dataset = Subset(self.official("train"), parts[split].tolist())
        if not self.cache:
            return dataset
        names = [dataset.dataset.filename[i] for i in dataset.indices] if isinstance(dataset, Subset) else \
            dataset.filename
        row = {name: i for i, name in enumerate(self.cached_names)}
        rows = [row[name] for name in names if row[name] not in self.decoded.bad]  # unreadable files left out
        images = torch.from_numpy(self.decoded.images)  # shares the mapping: only the rows gathered are read
        return InMemoryImages(images, None, torch.tensor(rows, dtype=torch.long))

    @cached_property
    def cached_names(self) -> list[str]:
        """The images present in any official split, sorted: the rows of the cache."""
        return sorted({name for split in self.splits for name in self.official(split).filename})

    @cached_property
    def decoded(self) -> DecodedImages:
        """The decoded cache (`cache=True`), built on first use: by `prepare_data` under a Trainer."""
        folder = self.official("train").image_folder
        settings = {"image_size": self.image_size, "crop": self.crop}
        hint = ("delete it and copy a complete one from the official archive, or pass --data.on_bad_file warn to "
                "skip unreadable files")
        decoded = decoded_images(folder, self.cached_names, lambda path: decode_face(path, self.crop, self.image_size),
                                 self.image_shape, {"dataset": "CelebA", **settings},
                                 self.cache_dir or default_cache_dir(folder), stop_on_bad=self.on_bad_file == "error",
                                 bad_file_hint=hint, desc=f"decoding CelebA at {self.image_size}px")
        check_bad_files(decoded, folder, self.cached_names, self.on_bad_file, "CelebA", hint)
        return decoded

    def prepare_data(self) -> None:
        super().prepare_data()
        if self.cache:
            self.decoded  # noqa: B018 - decodes once per machine, before the ranks set up

    def fetch(self) -> None:
        datasets.CelebA(str(self.root), split="all", target_type=[], download=True)


def decode_face(path: Path, crop: int, image_size: int) -> np.ndarray:
    """One CelebA JPEG -> uint8 (3, image_size, image_size): centre `crop` square, then an antialiased resize."""
    image = read_rgb(path)
    width, height = image.size
    left, top = round((width - crop) / 2), round((height - crop) / 2)  # as torchvision's CenterCrop
    image = image.crop((left, top, left + crop, top + crop)).resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def read_rgb(path: Path) -> Image.Image:
    """One image file decoded as RGB; an empty file says so (PIL only says it cannot identify it)."""
    if path.stat().st_size == 0:
        raise OSError("empty file (0 bytes)")
    with Image.open(path) as image:
        return image.convert("RGB")
