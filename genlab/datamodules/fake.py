"""FakeImages: seeded random images of any shape, for tests and smoke runs: no files, no network."""

import torch
from torch import Tensor

from .base import ImageDataModule


class FakeImages(ImageDataModule):
    """Uniform random uint8 images of `image_shape` with random labels (zeros when num_classes is None).

    `size` images for "train" (val is split off) and `size` more for "test", from different seeds.

    Args:
        image_shape: (C, H, W) of the images generated.
        size: images generated for "train" (before val is split off), and again for "test".
        num_classes: labels drawn uniformly from 0..num_classes-1; None: unlabelled (all zeros).
    """

    def __init__(self, image_shape: tuple[int, int, int] = (1, 28, 28), size: int = 64,
                 num_classes: int | None = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        if len(image_shape) != 3 or any(int(d) < 1 for d in image_shape):
            raise ValueError(f"image_shape must be three positive sizes (C, H, W), got {image_shape!r}")
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size!r}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 or None, got {num_classes!r}")
        self.image_shape = tuple(int(d) for d in image_shape)
        self.size, self.num_classes = size, num_classes
        # The CLI's config holds the shape as a list, but the model gets this tuple (linked); Lightning refuses to log
        # a model and datamodule whose shared hparams differ even in type, so record the tuple.
        self.save_hyperparameters({"image_shape": self.image_shape})

    def load_split(self, split: str) -> tuple[Tensor, Tensor | None]:
        self.check_split(split)
        generator = torch.Generator().manual_seed(2 * self.seed + (split == "test"))  # train and test differ
        images = torch.randint(0, 256, (self.size, *self.image_shape), generator=generator, dtype=torch.uint8)
        if self.num_classes is None:
            return images, None
        return images, torch.randint(0, self.num_classes, (self.size,), generator=generator)
