"""Shapes: the embedded default dataset, dSprites-like images generated in code with known factors of variation."""

import math

import torch
from torch import Tensor

from .base import ImageDataModule

SHAPE_NAMES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "rotation", "x", "y")
# Discrete grids like dSprites (Matthey et al., 2017): every image is one point of their product.
GRIDS = (
    torch.arange(3.0),                          # shape index into SHAPE_NAMES
    torch.linspace(0.5, 1.0, 6),                # scale
    torch.arange(40) * (2 * math.pi / 40),      # rotation, radians
    torch.linspace(0.0, 1.0, 32),               # x position, 0 = leftmost, 1 = rightmost
    torch.linspace(0.0, 1.0, 32),               # y position, 0 = top, 1 = bottom
)
RADIUS = 0.3  # radius of the disc holding a shape at scale 1, as a fraction of the image side


def inside(shape: int, x: Tensor, y: Tensor) -> Tensor:
    """Whether points (x, y) (y up) lie in unit shape `shape`; every unit shape fits in the unit disc."""
    if shape == 0:  # square inscribed in the disc
        return torch.maximum(x.abs(), y.abs()) <= 0.5**0.5
    if shape == 1:  # 2:1 ellipse, so rotation is visible
        return x * x + 4 * y * y <= 1
    # Heart curve (x² + y² - 1)³ - x² y³ <= 0, shrunk by 1.31 and centred so it also fits in the unit disc.
    x, y = 1.31 * x, 1.31 * y + 0.15
    x2, r = x * x, x * x + y * y - 1
    return r * r * r <= x2 * y * y * y


def render(factors: Tensor, image_size: int, supersample: int = 2, chunk: int = 512) -> Tensor:
    """uint8 images (N, 1, S, S) of one white shape on black for factors (N, 5) in FACTOR_NAMES order.

    Vectorised: every pixel is mapped back into the shape's own frame and tested against the unit shape;
    `supersample`² sub-pixel samples per pixel give anti-aliased edges.
    """
    side, samples = image_size * supersample, supersample**2
    grid = (torch.arange(side) + 0.5) / side  # sub-pixel centres in [0, 1]
    images = torch.zeros(len(factors), 1, image_size, image_size, dtype=torch.uint8)
    for k in range(len(SHAPE_NAMES)):
        # One shape at a time, in chunks: bounded memory, (chunk, side, side) per temporary, and no masking.
        for index in (factors[:, 0] == k).nonzero().view(-1).split(chunk):
            _, scale, angle, cx, cy = (column.view(-1, 1, 1) for column in factors[index].T)
            radius = RADIUS * scale
            # x = 0 / 1 puts the bounding disc against the left / right edge: never clipped, small shapes roam more
            centre_x, centre_y = radius + (1 - 2 * radius) * cx, radius + (1 - 2 * radius) * cy
            dx = (grid.view(1, 1, -1) - centre_x) / radius  # (n, 1, side)
            dy = (centre_y - grid.view(1, -1, 1)) / radius  # (n, side, 1): image rows grow downwards, shapes are y up
            cos, sin = torch.cos(angle), torch.sin(angle)
            x, y = cos * dx + sin * dy, cos * dy - sin * dx  # rotating the grid by -angle rotates the shape by +angle
            hits = inside(k, x, y).view(-1, image_size, supersample, image_size, supersample).sum((2, 4))
            images[index, 0] = ((hits * 255 + samples // 2) // samples).to(torch.uint8)  # coverage, rounded
    return images


class Shapes(ImageDataModule):
    """Grey (1, S, S) images of a square, ellipse or heart at a random scale, rotation and position; label = shape.

    Generated in code (no files): `size` images for "train" (val is split off) and `size` more for "test", from
    different seeds. `val_factors(n)` gives the true factors of `val_batch(n)`, for traversal and disentanglement
    figures.

    Args:
        image_size: side S of the square images, in pixels (at least 8).
        size: images generated for "train" (before val is split off), and again for "test".
    """

    num_classes = 3
    class_names = list(SHAPE_NAMES)
    factor_names = FACTOR_NAMES
    shape_names = SHAPE_NAMES

    def __init__(self, image_size: int = 32, size: int = 10000, **kwargs) -> None:
        super().__init__(**kwargs)
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 for shapes to be recognisable, got {image_size!r}")
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size!r}")
        self.image_size, self.size = image_size, size
        self.image_shape = (1, image_size, image_size)

    def factors(self, split: str) -> Tensor:
        """Factor values (size, 5) of every image in `split`, in FACTOR_NAMES order; cheap, no rendering."""
        self.check_split(split)
        # 2 * seed + split: train and test never share a seed, whatever seed is chosen.
        generator = torch.Generator().manual_seed(2 * self.seed + (split == "test"))
        picks = [grid[torch.randint(len(grid), (self.size,), generator=generator)] for grid in GRIDS]
        return torch.stack(picks, dim=1)

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        factors = self.factors(split)
        return render(factors, self.image_size), factors[:, 0].long()

    def val_factors(self, n: int) -> Tensor:
        """Factors (n, 5), float, of the images in `val_batch(n)`, row for row."""
        self.dataset("val")  # makes sure the train/val split exists
        return self.factors("train")[self.split_indices["val"][:n]]
