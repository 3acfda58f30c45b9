"""CIFAR-10 from torchvision's python pickles in `root/cifar-10-batches-py/`."""

import warnings

import torch
from torch import Tensor
from torchvision import datasets

from .base import ImageDataModule


class _CIFAR10Files(datasets.CIFAR10):
    """torchvision's CIFAR10 reading only the given batch files, with or without its md5 checks."""

    def __init__(self, root: str, train: bool, batches: list[str], verify: bool) -> None:
        md5 = dict(datasets.CIFAR10.train_list + datasets.CIFAR10.test_list)
        listed = [[name, md5[name] if verify else None] for name in batches]  # md5 None: torchvision checks existence
        self.train_list, self.test_list = (listed, []) if train else ([], listed)
        if not verify:
            self.meta = {**self.meta, "md5": None}
        super().__init__(root, train=train)


class CIFAR10(ImageDataModule):
    """CIFAR-10: 50k train (val is split off) + 10k test colour images, 3x32x32, 10 classes.

    With verify=False, partial re-packed copies load too: whichever train batches are present are used (with a
    warning naming the missing ones).
    """

    image_shape = (3, 32, 32)
    num_classes = 10

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        self.check_split(split)
        folder = self.root / datasets.CIFAR10.base_folder
        listed = datasets.CIFAR10.train_list if split == "train" else datasets.CIFAR10.test_list
        official = [name for name, _ in listed]
        present = [name for name in official if (folder / name).is_file()]
        expected = [*official, "batches.meta"]
        partial = self.verify and 0 < len(present) < len(official)
        hint = "--data.verify false uses the batches present" if partial else ""
        self.require(folder, expected if self.verify or not present else [*present, "batches.meta"], hint)
        if len(present) < len(official):  # only reachable unverified: a partial or re-packed copy
            missing = ", ".join(name for name in official if name not in present)
            warnings.warn(f"CIFAR10: {folder} lacks {missing}; using only {', '.join(present)}", stacklevel=2)
        with self.torchvision_errors(folder, expected):
            cifar = _CIFAR10Files(str(self.root), split == "train", present, self.verify)
        images = torch.from_numpy(cifar.data).permute(0, 3, 1, 2).contiguous()  # torchvision keeps HWC
        return images, torch.tensor(cifar.targets, dtype=torch.long)

    def fetch(self) -> None:
        datasets.CIFAR10(str(self.root), train=True, download=True)
