"""Brendan Frey's face images (Roweis' `frey_rawface.mat`): 1,965 grey 28x20 faces, no labels, no official split."""

from pathlib import Path

import numpy as np
import torch
from scipy.io import loadmat
from torch import Tensor
from torchvision.datasets.utils import download_url

from ..errors import GenlabError
from .base import ImageDataModule

URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
FILE = "frey_rawface.mat"
EXPECTED = "expected 'ff' of shape (560, N): one 28x20 face per column, grey levels 0..255"


class FreyFaces(ImageDataModule):
    """Frey faces, (1, 28, 20) — not square. A seeded 10% is held out as test, then `val_fraction` of the rest as val.

    The file has no official checksum, so `verify` has nothing to check here.
    """

    image_shape = (1, 28, 20)
    num_classes = None
    test_fraction = 0.1

    def load_split(self, split: str) -> tuple[Tensor, None]:
        self.check_split(split)
        folder = self.root / "frey"
        self.require(folder, [FILE])
        with self.reading(folder / FILE):
            contents = loadmat(folder / FILE)
        faces = torch.from_numpy(faces_in(folder / FILE, contents))
        # Its own generator: the test set must not depend on val_fraction or on which stage ran first.
        order = torch.randperm(len(faces), generator=torch.Generator().manual_seed(self.seed))
        n_test = round(len(faces) * self.test_fraction)
        return faces[order[:n_test] if split == "test" else order[n_test:]], None

    def fetch(self) -> None:
        download_url(URL, str(self.root / "frey"), FILE)


def faces_in(path: Path, contents: dict) -> np.ndarray:
    """The faces (N, 1, 28, 20) uint8 in the `ff` array (560, N) of the .mat `contents` read from `path`; a
    GenlabError naming the file, what it holds and what is expected when it is anything else."""
    pixels = contents.get("ff")
    if pixels is None:
        held = ", ".join(name for name in contents if not name.startswith("__")) or "nothing"
        raise GenlabError(f"FreyFaces: {path} holds no 'ff' array (it holds: {held}); {EXPECTED}")
    if pixels.ndim != 2 or pixels.shape[0] != 560 or pixels.shape[1] < 1:
        raise GenlabError(f"FreyFaces: {path} holds 'ff' of shape {pixels.shape}; {EXPECTED}")
    whole_bytes = np.issubdtype(pixels.dtype, np.number) and pixels.min() >= 0 and pixels.max() <= 255 and \
        np.array_equal(pixels, np.round(pixels))
    if pixels.dtype != np.uint8 and not whole_bytes:
        raise GenlabError(f"FreyFaces: {path} holds 'ff' of dtype {pixels.dtype} with values outside 0..255 or "
                          f"not whole; {EXPECTED}")
    return pixels.T.astype(np.uint8).reshape(-1, 1, 28, 20)  # column k: face k flattened row-major
