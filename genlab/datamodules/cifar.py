"""CIFAR-10 from torchvision's python pickles in `root/cifar-10-batches-py/`."""

import warnings

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from ..io import CorruptFileError, load_pickle
from .base import ImageDataModule
from .dataset_errors import DatasetCorruptError


class CIFAR10(ImageDataModule):
    """CIFAR-10: 50k train (val is split off) + 10k test colour images, 3x32x32, 10 classes.

    With verify=False, partial re-packed copies load too: whichever train batches are present are used (with a
    warning naming the missing ones).
    """

    image_shape = (3, 32, 32)
    num_classes = 10
    class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

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
        md5 = dict(listed)
        bad = [name for name in present if self.verify and not check_integrity(str(folder / name), md5[name])]
        if bad:
            raise self.not_found(folder, expected, f"{', '.join(bad)} fail torchvision's checksum; pass --data.verify "
                                                   f"false for a re-packed copy")
        images, labels = [], []
        for name in present:  # python pickles, read by an allow-list unpickler: a crafted file cannot run code
            path = folder / name
            try:
                batch = load_pickle(path)  # UnsafeFileError (refused: it would run code) passes through as is
            except CorruptFileError as error:
                raise DatasetCorruptError(type(self).__name__, path, str(error.__cause__ or error)) from error
            with self.reading(path):  # a pickle of something else: KeyError, ValueError...
                images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))  # rows are CHW
                labels.extend(batch["labels"])
        return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long)

    def fetch(self) -> None:
        datasets.CIFAR10(str(self.root), train=True, download=True)
