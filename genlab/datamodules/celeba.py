"""CelebA aligned faces from `root/celeba/`, decoded lazily: 200k JPEGs are too many to hold in memory."""

import os
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets, transforms
from torchvision.datasets.celeba import CSV

from .base import ImageDataModule

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

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        with Image.open(self.image_folder / self.filename[index]) as image:
            return self.transform(image.convert("RGB")), 0


class CelebA(ImageDataModule):
    """CelebA faces, centre-cropped to `crop` pixels then resized to `image_size`: (3, image_size, image_size).

    Uses the official train/valid/test partition ("valid" is served as "val"; `val_fraction` is unused). Needs
    `celeba/img_align_celeba/*.jpg` and `celeba/list_eval_partition.txt`, plus torchvision's four other annotation
    files when verify=True.
    """

    official_val = True

    def __init__(self, image_size: int = 64, crop: int = 148, **kwargs) -> None:
        super().__init__(**kwargs)
        if image_size < 1 or crop < 1:
            raise ValueError(f"image_size and crop must be >= 1, got image_size={image_size!r}, crop={crop!r}")
        self.image_size, self.crop = image_size, crop
        self.image_shape = (3, image_size, image_size)

    def load_split(self, split: str) -> tuple[Tensor, None]:
        raise NotImplementedError("CelebA decodes its JPEGs lazily, per item; use make_dataset(split) instead")

    def make_dataset(self, split: str) -> Dataset:
        self.check_split(split)
        folder = self.root / datasets.CelebA.base_folder
        annotations = [name for _, _, name in datasets.CelebA.file_list if name.endswith(".txt")]
        expected = ["img_align_celeba/", *(annotations if self.verify else [PARTITION])]
        self.require(folder, expected)
        transform = transforms.Compose([transforms.CenterCrop(self.crop),
                                        transforms.Resize(self.image_size, antialias=True), transforms.ToTensor()])
        name = {"train": "train", "val": "valid", "test": "test"}[split]
        with self.torchvision_errors(folder, expected):
            dataset = _CelebAFiles(str(self.root), name, self.verify, transform)
        missing = dataset.listed - len(dataset)
        if len(dataset) == 0:  # e.g. a train-only subset: fail now rather than serve an empty loader
            raise self.not_found(folder, expected, f"the {split} split is empty: none of the {dataset.listed} "
                                                   f"'{name}' images listed in {PARTITION} is in img_align_celeba/")
        if missing and self.verify:
            raise self.not_found(folder, expected, f"{missing} of the {dataset.listed} '{name}' images listed in "
                                                   f"{PARTITION} are missing; --data.verify false uses those present")
        if missing:
            warnings.warn(f"CelebA: using the {len(dataset)} of {dataset.listed} {name} images present in {folder}",
                          stacklevel=2)
        return dataset

    def fetch(self) -> None:
        datasets.CelebA(str(self.root), split="all", target_type=[], download=True)
