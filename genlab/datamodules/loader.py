"""The fast data path: whole batches sliced from in-memory uint8 tensors, in an order that is a pure function of
(data seed, run seed, epoch), sharded over DDP ranks; and the same resumable order for datasets decoded per item.

A `DataLoader` over a map-style dataset calls `__getitem__` once per image and collates in Python; on a GPU that
per-sample work, not the model, sets the speed. `BatchLoader` instead gathers a whole batch with one indexing
operation (`images[index]`), and leaves the conversion to float (and any per-batch augmentation) to a function that
the datamodule runs on the model's device after the transfer. `ItemLoader` is the `DataLoader` for datasets too big
for memory (CelebA's JPEGs), with the same order and the same mid-epoch state, and unreadable files left out.
"""

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, default_collate

from ..errors import GenlabError

Batch = tuple[Tensor, Tensor]


class EpochOrder(DistributedSampler):
    """This rank's positions into a split of `size` items for the current epoch.

    Training (`shuffle=True`): a permutation drawn from a generator seeded by (seed, run_seed, epoch) alone, so a
    resumed run sees the same order, cut into `num_replicas` disjoint blocks of equal length (the last `size %
    num_replicas` items of each epoch's permutation are left out, different ones every epoch). `seed` is the data seed
    (`--data.seed`), `run_seed` the run's global seed (`--seed_everything`, which Lightning exports as
    PL_GLOBAL_SEED): runs that differ in either see other orders; with run_seed None the order follows `seed` alone.
    Evaluation (`shuffle=False`): the items in order, dealt round-robin and padded by wrapping around (as
    `DistributedSampler` does) so every rank runs the same number of batches; with one process that is simply
    0, 1, ..., size - 1.

    A `DistributedSampler` subclass, so Lightning neither replaces it nor wraps it again under DDP; `set_epoch` is
    called by Lightning at the start of every epoch, and after a complete pass the epoch also advances by itself
    (for plain loops that never call it). `start` positions are left out of the next pass only (a resumed epoch).
    """

    def __init__(self, size: int, shuffle: bool, seed: int = 0, rank: int = 0, num_replicas: int = 1,
                 run_seed: int | None = None) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas})")
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.size, self.run_seed, self.start = size, run_seed, 0
        self.num_samples = size // num_replicas if shuffle else math.ceil(size / num_replicas)
        if shuffle and self.num_samples == 0 and size > 0:
            raise ValueError(f"{size} training items cannot be shared by {num_replicas} processes")

    def order_seed(self) -> int:
        """The seed of this epoch's permutation: a hash of (seed, run_seed, epoch)."""
        if self.run_seed is None:  # the order of checkpoints written before the run seed was mixed in
            return self.seed * 1_000_003 + self.epoch
        entropy = [self.seed % 2**64, self.run_seed % 2**64, self.epoch]
        return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])

    def indices(self) -> Tensor:
        """Positions (int64, CPU) this rank visits in the current epoch, in visiting order."""
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.order_seed()))
            return order[self.rank * self.num_samples: (self.rank + 1) * self.num_samples]
        padded = torch.arange(self.num_samples * self.num_replicas) % max(self.size, 1)
        return padded[self.rank:: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(self.indices()[start:].tolist())

    def __len__(self) -> int:
        return self.num_samples


class Resumable:
    """The mid-epoch state of a loader serving `sampler` (an EpochOrder) in batches.

    `state_dict()` is (epoch, batches served in it, and the run seed of the order), which Lightning stores in every
    checkpoint; after `load_state_dict`, the next pass over that same epoch starts at the following batch, and every
    later epoch keeps the saving run's order, so a run stopped mid-epoch resumes exactly where it stopped even when
    given another `--seed_everything`. Lightning takes no batch ahead from a loader with a length, so the count is the
    batches trained on. The state is the same on every rank. Subclasses yield the batches of a pass from `_batches`.
    """

    sampler: EpochOrder
    served = 0  # batches of the current pass handed out so far
    resume: tuple[int, int] | None = None  # (epoch, batches to skip) for the next pass, from a checkpoint

    def state_dict(self) -> dict[str, int]:
        state = {"epoch": self.sampler.epoch, "batches": self.served}
        return state if self.sampler.run_seed is None else {**state, "run_seed": self.sampler.run_seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume = (int(state["epoch"]), int(state["batches"]))
        self.sampler.run_seed = state.get("run_seed")  # absent: saved by a run whose order followed the data seed

    def __iter__(self) -> Iterator[Any]:
        resume, self.resume = self.resume, None  # applies to the very next pass only
        return self._serve(resume)

    def _serve(self, resume: tuple[int, int] | None) -> Iterator[Any]:
        # The order is drawn at the first batch, not at iter(): Lightning calls set_epoch in between.
        skip = resume[1] if resume is not None and resume[0] == self.sampler.epoch else 0
        self.served = skip
        for batch in self._batches(skip):
            self.served += 1
            if batch is not None:  # None: a batch with nothing readable in it
                yield batch
        if self.sampler.shuffle:
            self.sampler.set_epoch(self.sampler.epoch + 1)
            self.served = 0

    def _batches(self, skip: int) -> Iterator[Any]:
        raise NotImplementedError


class BatchLoader(Resumable):
    """Batches (images[index], labels[index]) of uint8 images, `batch_size` positions of `order` at a time; with
    `rows`, position i is row rows[i] of the tensors (a split sharing its tensors with another).

    The tensors may live on any device (`--data.on_device true` keeps them on the GPU, so batches never cross the
    bus). `convert`, when given, maps each raw batch (e.g. to float in [0, 1]); the datamodule leaves it out when a
    Trainer drives the loop and converts in `on_after_batch_transfer` instead, on the model's device. Lightning
    accepts any sized iterable as a loader and finds `sampler.set_epoch` here as on a DataLoader. Resumable
    mid-epoch (see `Resumable`).
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, order: EpochOrder,
                 convert: Callable[[Tensor, Tensor], Batch] | None = None, rows: Tensor | None = None) -> None:
        size = len(images) if rows is None else len(rows)
        if len(images) != len(labels) or size != order.size:
            raise ValueError(f"images ({len(images)}), labels ({len(labels)}), rows ({size}) and order "
                             f"({order.size}) must agree")
        self.images, self.labels, self.rows, self.batch_size, self.convert = images, labels, rows, batch_size, convert
        self.sampler, self.batch_sampler = order, None  # where Lightning looks, as on a DataLoader

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def _batches(self, skip: int) -> Iterator[Batch]:
        index = self.sampler.indices().to(self.images.device)
        if self.rows is not None:
            index = self.rows[index]
        for chunk in index[skip * self.batch_size:].split(self.batch_size):
            x, y = self.images[chunk], self.labels[chunk]  # one gather per batch, no per-sample Python
            yield self.convert(x, y) if self.convert is not None else (x, y)


class Unreadable(NamedTuple):
    """What a dataset decoded per item gives, in place of an item, for a file it cannot decode."""

    path: str
    reason: str

    def error(self) -> GenlabError:
        return GenlabError(f"cannot read {self.path} ({self.reason}); remove it, or pass --data.on_bad_file warn to "
                           f"skip unreadable files")


class SkipUnreadable:
    """collate_fn for datasets decoded per item (whose `__getitems__` returns `Unreadable` for a bad file): the batch
    of the readable items (None if there is none) and the unreadable ones. `check`, called by `ItemLoader` in the
    main process, warns once per unreadable file (`on_bad_file="warn"`) or raises its one-line error ("error")."""

    def __init__(self, on_bad_file: str = "warn", dataset: str = "dataset") -> None:
        if on_bad_file not in ("warn", "error"):
            raise ValueError(f"on_bad_file must be warn or error, got {on_bad_file!r}")
        self.on_bad_file, self.dataset, self.warned = on_bad_file, dataset, set()

    def __call__(self, items: list) -> tuple[Any, list[Unreadable]]:
        bad = [item for item in items if isinstance(item, Unreadable)]
        good = [item for item in items if not isinstance(item, Unreadable)]
        return (default_collate(good) if good else None), bad

    def check(self, bad: list[Unreadable]) -> None:
        for item in bad:
            if self.on_bad_file == "error":
                raise item.error()
            if item.path not in self.warned:
                self.warned.add(item.path)
                warnings.warn(f"{self.dataset}: skipped {item.path}, which cannot be read ({item.reason})",
                              stacklevel=3)


class ItemLoader(Resumable, DataLoader):
    """A DataLoader for datasets decoded per item (in `num_workers` processes), built with `sampler=EpochOrder(...)`
    and `collate_fn=SkipUnreadable(...)`: the order and the mid-epoch state of `BatchLoader` (see `Resumable`), and
    unreadable files left out of their batch, with one warning each, or a one-line stop. A batch with nothing
    readable in it is skipped in one process, and stops a DDP run (whose processes must take the same steps).

    Remade by Lightning for `predict` (its own batch sampler in place of the EpochOrder): a plain pass, in order.
    """

    def __iter__(self) -> Iterator[Any]:
        if not isinstance(self.sampler, EpochOrder):
            return (batch for batch in self._batches(0) if batch is not None)
        return super().__iter__()

    def _batches(self, skip: int) -> Iterator[Any]:
        if isinstance(self.sampler, EpochOrder):
            self.sampler.start = skip * self.batch_size
        for batch in DataLoader.__iter__(self):
            if isinstance(self.collate_fn, SkipUnreadable):
                batch, bad = batch
                self.collate_fn.check(bad)
                if batch is None and isinstance(self.sampler, EpochOrder) and self.sampler.num_replicas > 1:
                    # a skipped step would desync the ranks
                    raise GenlabError(f"every image of a batch is unreadable ({len(bad)}, e.g. {bad[0].path}); under "
                                      f"DDP each process must take the same number of steps: remove those files")
            yield batch
