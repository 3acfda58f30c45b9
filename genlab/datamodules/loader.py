"""The fast data path: whole batches sliced from in-memory uint8 tensors, in an order that is a pure function of
(seed, epoch), sharded over DDP ranks.

A `DataLoader` over a map-style dataset calls `__getitem__` once per image and collates in Python; on a GPU that
per-sample work, not the model, sets the speed. `BatchLoader` instead gathers a whole batch with one indexing
operation (`images[index]`), and leaves the conversion to float (and any per-batch augmentation) to a function that
the datamodule runs on the model's device after the transfer.
"""

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

Batch = tuple[Tensor, Tensor]


class EpochOrder(DistributedSampler):
    """This rank's positions into a split of `size` items for the current epoch.

    Training (`shuffle=True`): a permutation drawn from a generator seeded by (seed, epoch) alone, so a resumed run
    sees the same order, cut into `num_replicas` disjoint blocks of equal length (the last `size % num_replicas`
    items of each epoch's permutation are left out, different ones every epoch). Evaluation (`shuffle=False`): the
    items in order, dealt round-robin and padded by wrapping around (as `DistributedSampler` does) so every rank runs
    the same number of batches; with one process that is simply 0, 1, ..., size - 1.

    A `DistributedSampler` subclass, so Lightning neither replaces it nor wraps it again under DDP; `set_epoch` is
    called by Lightning at the start of every epoch, and after a complete pass the epoch also advances by itself
    (for plain loops that never call it).
    """

    def __init__(self, size: int, shuffle: bool, seed: int = 0, rank: int = 0, num_replicas: int = 1) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas})")
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.size = size
        self.num_samples = size // num_replicas if shuffle else math.ceil(size / num_replicas)
        if shuffle and self.num_samples == 0 and size > 0:
            raise ValueError(f"{size} training items cannot be shared by {num_replicas} processes")

    def indices(self) -> Tensor:
        """Positions (int64, CPU) this rank visits in the current epoch, in visiting order."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator)
            return order[self.rank * self.num_samples: (self.rank + 1) * self.num_samples]
        padded = torch.arange(self.num_samples * self.num_replicas) % max(self.size, 1)
        return padded[self.rank:: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples


class BatchLoader:
    """Batches (images[index], labels[index]) of uint8 images, `batch_size` positions of `order` at a time; with
    `rows`, position i is row rows[i] of the tensors (a split sharing its tensors with another).

    The tensors may live on any device (`--data.on_device true` keeps them on the GPU, so batches never cross the
    bus). `convert`, when given, maps each raw batch (e.g. to float in [0, 1]); the datamodule leaves it out when a
    Trainer drives the loop and converts in `on_after_batch_transfer` instead, on the model's device. Lightning
    accepts any sized iterable as a loader and finds `sampler.set_epoch` here as on a DataLoader.

    Stateful: `state_dict()` is (epoch, batches served in it), which Lightning stores in every checkpoint; after
    `load_state_dict`, the next pass over that same epoch starts at the following batch, so a run stopped mid-epoch
    resumes exactly where it stopped (the order itself is a function of (seed, epoch)). Lightning takes no batch
    ahead from a loader with a length, so the count is the batches trained on. The state is the same on every rank.
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, order: EpochOrder,
                 convert: Callable[[Tensor, Tensor], Batch] | None = None, rows: Tensor | None = None) -> None:
        size = len(images) if rows is None else len(rows)
        if len(images) != len(labels) or size != order.size:
            raise ValueError(f"images ({len(images)}), labels ({len(labels)}), rows ({size}) and order "
                             f"({order.size}) must agree")
        self.images, self.labels, self.rows, self.batch_size, self.convert = images, labels, rows, batch_size, convert
        self.sampler, self.batch_sampler = order, None  # where Lightning looks, as on a DataLoader
        self.served = 0  # batches of the current pass handed out so far
        self.resume: tuple[int, int] | None = None  # (epoch, batches to skip) for the next pass, from a checkpoint

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume = (int(state["epoch"]), int(state["batches"]))

    def __iter__(self) -> Iterator[Batch]:
        resume, self.resume = self.resume, None  # applies to the very next pass only
        return self._batches(resume)

    def _batches(self, resume: tuple[int, int] | None) -> Iterator[Batch]:
        # The order is drawn at the first batch, not at iter(): Lightning calls set_epoch in between.
        skip = resume[1] if resume is not None and resume[0] == self.sampler.epoch else 0
        index = self.sampler.indices().to(self.images.device)
        if self.rows is not None:
            index = self.rows[index]
        self.served = skip
        for chunk in index[skip * self.batch_size:].split(self.batch_size):
            x, y = self.images[chunk], self.labels[chunk]  # one gather per batch, no per-sample Python
            self.served += 1
            yield self.convert(x, y) if self.convert is not None else (x, y)
        if self.sampler.shuffle:
            self.sampler.set_epoch(self.sampler.epoch + 1)
            self.served = 0
