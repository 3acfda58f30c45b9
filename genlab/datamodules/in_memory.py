"""A split held in memory as uint8 tensors, possibly only some rows of tensors it shares with another split."""

import torch
from torch import Tensor
from torch.utils.data import Dataset


class InMemoryImages(Dataset):
    """uint8 images (N, C, H, W) and int64 labels (N,) in memory, served as (float image in [0, 1], label).

    With `rows`, only those rows of the tensors belong to this dataset: train and val then share one decoded copy
    of the file's images instead of each holding their own (peak host memory stays near the uint8 size).
    """

    def __init__(self, images: Tensor, labels: Tensor | None = None, rows: Tensor | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.source, self.rows = images, rows
        # Unlabelled datasets still yield (x, y) so every model sees the same batch structure.
        self.source_labels = torch.zeros(len(images), dtype=torch.long) if labels is None else labels.long()

    @property
    def images(self) -> Tensor:
        """This dataset's images (a copy when it holds only some rows of its tensors)."""
        return self.source if self.rows is None else self.source[self.rows]

    @property
    def labels(self) -> Tensor:
        return self.source_labels if self.rows is None else self.source_labels[self.rows]

    def __len__(self) -> int:
        return len(self.source) if self.rows is None else len(self.rows)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        row = index if self.rows is None else self.rows[index]
        return self.source[row].float() / 255, self.source_labels[row]

    def head(self, n: int) -> tuple[Tensor, Tensor]:
        """The first n images (uint8) and labels."""
        rows = slice(0, n) if self.rows is None else self.rows[:n]
        return self.source[rows], self.source_labels[rows].clone()
