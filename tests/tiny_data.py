"""A tiny seeded datamodule for callback and report tests, independent of genlab.datamodules."""

import torch
from lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

SHAPE = (1, 16, 16)


class TinyImages(LightningDataModule):
    """Seeded random images (1, 16, 16) with 3 labels and the datamodule figure API (`val_batch`)."""

    image_shape, num_classes = SHAPE, 3

    def __init__(self, size: int = 16, batch_size: int = 4) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(size, *SHAPE, generator=g), torch.randint(0, 3, (size,), generator=g)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size)

    val_dataloader = train_dataloader

    def val_batch(self, n: int) -> tuple[Tensor, Tensor]:
        return self.x[:n], self.y[:n]
