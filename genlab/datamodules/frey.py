"""Brendan Frey's face images (Roweis' `frey_rawface.mat`): 1,965 grey 28x20 faces, no labels, no official split."""

import numpy as np
import torch
from scipy.io import loadmat
from torch import Tensor
from torchvision.datasets.utils import download_url

from .base import ImageDataModule

URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
FILE = "frey_rawface.mat"


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
            pixels = loadmat(folder / FILE)["ff"]  # (560, N) uint8: one flattened 28x20 face per column
            faces = torch.from_numpy(pixels.T.astype(np.uint8)).reshape(-1, 1, 28, 20)
        # Its own generator: the test set must not depend on val_fraction or on which stage ran first.
        order = torch.randperm(len(faces), generator=torch.Generator().manual_seed(self.seed))
        n_test = round(len(faces) * self.test_fraction)
        return faces[order[:n_test] if split == "test" else order[n_test:]], None

    def fetch(self) -> None:
        download_url(URL, str(self.root / "frey"), FILE)
