"""SVHN cropped digits from torchvision's `train_32x32.mat` / `test_32x32.mat`, directly in `root`."""

import os

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets

from .base import ImageDataModule


class _SVHNFiles(datasets.SVHN):
    """torchvision's SVHN that can skip its md5 check, for re-packed .mat files."""

    def __init__(self, root: str, split: str, verify: bool) -> None:
        self.verify = verify
        super().__init__(root, split=split)

    def _check_integrity(self) -> bool:
        return super()._check_integrity() if self.verify else os.path.isfile(os.path.join(self.root, self.filename))


class SVHN(ImageDataModule):
    """Street View House Numbers: 73k train (val is split off) + 26k test, 3x32x32, digits 0-9.

    The .mat files label the digit 0 as 10; torchvision already maps it back to 0.
    """

    image_shape = (3, 32, 32)
    num_classes = 10
    class_names = [str(digit) for digit in range(10)]  # label 10 in the files is digit 0, served as 0

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        self.check_split(split)
        expected = [datasets.SVHN.split_list[split][1]]
        self.require(self.root, expected)
        with self.torchvision_errors(self.root, expected), self.reading(self.root / expected[0]):
            svhn = _SVHNFiles(str(self.root), split, self.verify)
        # torchvision transposes the (H, W, C, N) .mat array to (N, C, H, W) already: a strided view, kept as it is
        # (batches are gathered into contiguous tensors), so the decoded file is the only copy in memory.
        labels = torch.from_numpy(svhn.labels.astype(np.int64).reshape(-1))
        return torch.from_numpy(svhn.data), labels

    def fetch(self) -> None:
        for split in ("train", "test"):
            datasets.SVHN(str(self.root), split=split, download=True)
