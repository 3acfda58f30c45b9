"""MNIST digits, read from torchvision's raw idx files or straight from the .gz downloads."""

import gzip
import struct
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from math import prod
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from .base import ImageDataModule
from .in_memory import InMemoryImages


def read_idx(path: Path) -> Tensor:
    """A uint8 idx file, plain or gzipped (LeCun's format: bytes 0, 0, 8, ndim; ndim big-endian uint32 sizes; data)."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    if data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not a uint8 idx file (magic {data[:4].hex()})")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    size = 4 + 4 * ndim + prod(shape)
    if len(data) != size:
        raise ValueError(f"{len(data)} bytes where its header {shape} promises {size}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=4 + 4 * ndim).reshape(shape)


def idx_names(train: bool) -> list[str]:
    prefix = "train" if train else "t10k"
    return [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]


class _MNISTFiles(datasets.MNIST):
    """torchvision's MNIST that also accepts only the .gz files: a read-only copy cannot be extracted in place."""

    def __init__(self, root: Path, train: bool, verify: bool, download: bool = False,
                 reading: Callable[[Path], AbstractContextManager] = lambda path: nullcontext()) -> None:
        self.verify, self.reading = verify, reading
        super().__init__(str(root), train=train, download=download)

    @property
    def raw_folder(self) -> str:
        return str(Path(self.root) / "MNIST" / "raw")  # torchvision derives it from the class name

    def find(self, name: str) -> Path | None:
        """The raw file if extracted, else the .gz (md5-checked against torchvision's list when verifying)."""
        raw, gz = Path(self.raw_folder) / name, Path(self.raw_folder) / f"{name}.gz"
        if raw.is_file():
            return raw
        md5 = dict(self.resources)[gz.name] if self.verify else None
        return gz if check_integrity(str(gz), md5) else None

    def _check_exists(self) -> bool:
        return all(self.find(name) for name in idx_names(self.train))

    def _load_data(self) -> tuple[Tensor, Tensor]:
        data = []
        for name in idx_names(self.train):
            path = self.find(name)
            with self.reading(path):  # a cut or damaged file: DatasetCorruptError naming it
                data.append(read_idx(path))
        images, labels = data
        if len(images) != len(labels):
            with self.reading(path):
                raise ValueError(f"{len(images)} images but {len(labels)} labels")
        return images, labels.long()


def binarize(p: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """{0, 1} draws with probabilities p, as U < p for uniform U: the same law as `torch.bernoulli`, which is several
    times slower on a CPU."""
    return (torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device) < p).to(p.dtype)


class BinarizedImages(InMemoryImages):
    """Dynamic binarisation: a fresh Bernoulli draw every time an image is served (Salakhutdinov & Murray, 2008).

    Item access only; the datamodule's loaders draw per batch, on the model's device (`MNIST.transform_batch`)."""

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x, y = super().__getitem__(index)
        return binarize(x), y


class MNIST(ImageDataModule):
    """MNIST, 60k train (val is split off) + 10k test, 1x28x28, from `root/MNIST/raw/` (idx or idx.gz files).

    Args:
        binarize: {0, 1} pixels. Train: dynamic binarisation, a fresh Bernoulli draw with the grey level as its
            probability for every batch, each epoch (done per batch on the model's device, so it costs nothing
            in the loader). Val and test: one fixed seeded draw, so their losses compare across epochs and runs.
    """

    image_shape = (1, 28, 28)
    num_classes = 10
    class_names = [str(digit) for digit in range(10)]

    def __init__(self, binarize: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.binarize = binarize

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        self.check_split(split)
        folder = self.root / "MNIST" / "raw"
        names = idx_names(split == "train")
        expected = [f"{name}[.gz]" for name in names]
        if not all((folder / name).is_file() or (folder / f"{name}.gz").is_file() for name in names):
            raise self.not_found(folder, expected)
        with self.torchvision_errors(folder, expected):
            mnist = _MNISTFiles(self.root, train=split == "train", verify=self.verify, reading=self.reading)
        return mnist.data.unsqueeze(1), mnist.targets  # (N, 28, 28) -> (N, 1, 28, 28)

    def to_dataset(self, images: Tensor, labels: Tensor | None, split: str, rows: Tensor | None = None) -> Dataset:
        if not self.binarize:
            return super().to_dataset(images, labels, split, rows)
        if split == "train":
            return BinarizedImages(images, labels, rows)
        if rows is not None:
            images, labels = images[rows], None if labels is None else labels[rows]
        # Val/test get one seeded draw so their losses are comparable across epochs and runs.
        generator = torch.Generator().manual_seed(self.seed + (1 if split == "val" else 2))
        fixed = binarize(images.float() / 255, generator)
        return InMemoryImages(fixed.to(torch.uint8) * 255, labels)

    def transform_batch(self, x: Tensor, train: bool) -> Tensor:
        x = super().transform_batch(x, train)
        return binarize(x) if self.binarize and train else x

    def fetch(self) -> None:
        for train in (True, False):
            _MNISTFiles(self.root, train=train, verify=True, download=True)
