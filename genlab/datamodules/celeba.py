"""CelebA aligned faces from `root/celeba/`, decoded lazily: 200k JPEGs are too many to hold in memory."""

import os
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Subset
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

    Uses the official train/valid/test partition ("valid" is served as "val"). An official split with no image
    present (e.g. a train-only subset) is replaced, with a warning, by a seeded `val_fraction` of train. Needs
    `celeba/img_align_celeba/*.jpg` and `celeba/list_eval_partition.txt`, plus torchvision's four other annotation
    files when verify=True.
    """

    official_val = True

    def __init__(self, image_size: int = 64, crop: int = 148, **kwargs) -> None:
        super().__init__(**kwargs)
        self._official: dict[str, _CelebAFiles] = {}
        self._held_out: dict[str, Tensor] | None = None
        if image_size < 1 or crop < 1:
            raise ValueError(f"image_size and crop must be >= 1, got image_size={image_size!r}, crop={crop!r}")
        self.image_size, self.crop = image_size, crop
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
        if split != "train" and len(dataset) > 0:
            return dataset
        parts = self.held_out()
        if len(parts) == 1:  # every official split has images
            return dataset
        return Subset(self.official("train"), parts[split].tolist())

    def fetch(self) -> None:
        datasets.CelebA(str(self.root), split="all", target_type=[], download=True)
