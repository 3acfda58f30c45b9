"""What every figure callback shares: schedule, rank-zero gating, the protocol check and a fixed data batch.

A subclass says which protocol it needs (`requires`) and how to draw (`make_figure(model, data)`); `data` is
anything with `val_batch(n) -> (x, y)`, so the same drawing code serves a training run and
`render_from_checkpoint`.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from lightning import Callback, LightningModule, Trainer
from matplotlib.figure import Figure
from torch import Tensor

from ..models.protocols import Conditional, LatentModel, Sampler
from .draw import log_figure

PROTOCOL_MEMBERS = {LatentModel: ("encode", "decode", "reconstruct", "latent_dim"), Sampler: ("sample",)}


def protocol_members(protocol: type) -> tuple[str, ...]:
    """The names a protocol asks for: its attributes and public methods."""
    if protocol in PROTOCOL_MEMBERS:
        return PROTOCOL_MEMBERS[protocol]
    methods = [name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")]
    return tuple(methods) + tuple(getattr(protocol, "__annotations__", {}))


def check_protocol(model: object, protocol: type, user: str) -> None:
    """Raise a TypeError naming the model and what it lacks when `model` does not implement `protocol`."""
    if not isinstance(model, protocol):
        missing = [name for name in protocol_members(protocol) if not hasattr(model, name)]
        raise TypeError(f"{user} needs a {protocol.__name__} model; {type(model).__name__} lacks "
                        f"{', '.join(missing) or 'the required members'}")


@contextmanager
def evaluating(model: object) -> Iterator[None]:
    """eval() and no_grad() for drawing, then every submodule's own train/eval mode back (a frozen part stays
    in eval); plain objects get no_grad only."""
    modes = [(m, m.training) for m in model.modules()] if isinstance(model, torch.nn.Module) else []
    if modes:
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


class LoaderBatches:
    """`val_batch(n)` over a DataLoader: the first batches, cached so every epoch's figure sees the same images."""

    def __init__(self, loader: object) -> None:
        self.loader, self.cache = loader, None

    def val_batch(self, n: int) -> tuple[Tensor, Tensor]:
        if self.cache is None or len(self.cache[0]) < n:
            xs, ys = [], []
            for batch in self.loader:
                x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) and len(batch) > 1 else (batch, None)
                x = x[0] if isinstance(x, (tuple, list)) else x
                xs.append(x)
                ys.append(torch.zeros(len(x), dtype=torch.long) if y is None else y)
                if sum(map(len, xs)) >= n:
                    break
            self.cache = torch.cat(xs), torch.cat(ys)
        return self.cache[0][:n], self.cache[1][:n]


def data_source(trainer: Trainer) -> object:
    """Where figures get real images: the datamodule's `val_batch`, else the first validation (or training) batch."""
    if hasattr(trainer.datamodule, "val_batch"):
        return trainer.datamodule
    loaders = trainer.val_dataloaders or trainer.train_dataloader
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0]
    if isinstance(loaders, dict):
        loaders = next(iter(loaders.values()))
    if loaders is None:
        raise RuntimeError("no datamodule with val_batch and no dataloader to take images from")
    return LoaderBatches(loaders)


class SharedImages:
    """The figure callbacks' images, shared by all of them in one run: the source's `val_batch` read once, at the
    size the largest of them asks for (`images_needed`), moved to the model's device once an epoch, and encoded once
    an epoch per size (`encoded`). Anything else (`class_names`, `val_factors`, ...) is the source's."""

    def __init__(self, source: object, size: int) -> None:
        self.source, self.size = source, size
        self.host: tuple[Tensor, Tensor] | None = None
        self.moved: tuple[Tensor, Tensor] | None = None  # the host batch on the model's device, this epoch
        self.codes: dict[tuple, Tensor] = {}

    def __getattr__(self, name: str) -> object:
        if name == "source":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.source, name)

    def val_batch(self, n: int) -> tuple[Tensor, Tensor]:
        if self.host is None or len(self.host[0]) < n:  # the first n of a larger read: the same images
            self.host, self.moved = self.source.val_batch(max(n, self.size)), None
        return self.host[0][:n], self.host[1][:n]

    def batch(self, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """The first n images and labels on `device`."""
        x, y = self.val_batch(n)
        if self.moved is None or self.moved[0].device != torch.device(device) or len(self.moved[0]) < len(x):
            self.moved = self.host[0].to(device), self.host[1].to(device)
        return self.moved[0][:len(x)], self.moved[1][:len(x)]

    def encoded(self, model: object, x: Tensor, y: Tensor) -> Tensor:
        """`model.encode(x, y)`, computed once an epoch for the same slice of the shared batch."""
        key = (id(model), x.data_ptr(), len(x), y.data_ptr(), x.device)
        if key not in self.codes:
            self.codes[key] = model.encode(x, y)
        return self.codes[key]

    def release(self) -> None:
        """Forget this epoch's device copy and codes (the weights change before the next epoch's figures)."""
        self.moved, self.codes = None, {}


def shared_images(trainer: Trainer) -> SharedImages:
    """The `SharedImages` of the trainer's figure callbacks: one already resolved by one of them, else a new one sized
    for all of them."""
    figures = [c for c in trainer.callbacks if isinstance(c, FigureCallback)]
    found = next((c.source for c in figures if isinstance(c.source, SharedImages)), None)
    if found is not None:
        return found
    size = max((c.images_needed() for c in figures), default=1)
    return SharedImages(data_source(trainer), max(size, 1))


def real_batch(data: object, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """`data.val_batch(n)` moved to the model's device (from the shared copy when `data` is `SharedImages`)."""
    if isinstance(data, SharedImages):
        return data.batch(n, device)
    x, y = data.val_batch(n)
    return x.to(device), y.to(device)


def encoded(model: object, data: object, x: Tensor, y: Tensor) -> Tensor:
    """`model.encode(x, y)` for images from `real_batch(data, ...)`: shared between callbacks within an epoch."""
    return data.encoded(model, x, y) if isinstance(data, SharedImages) else model.encode(x, y)


def last_figure_callback(trainer: Trainer) -> Callback | None:
    return next((c for c in reversed(trainer.callbacks) if isinstance(c, FigureCallback)), None)


def condition_kind(model: object) -> str | None:
    """How a model is conditioned (the `Conditional` protocol): "label", "image" or None (unconditional: a model
    that is not `Conditional`, or a family member without a condition)."""
    return model.condition_kind if isinstance(model, Conditional) else None


def decode_condition(model: object, x: Tensor, y: Tensor) -> Tensor:
    """What `decode(z, y=...)` needs for images x with labels y: the images for image-conditioned models (a CVAE on
    an image quarter), else the labels (label-conditioned models read them, unconditional ones ignore them)."""
    return x if condition_kind(model) == "image" else y


class FigureCallback(Callback):
    """Draws one figure every `every_n_epochs` training epochs on rank zero and hands it to `log_figure`.

    Hooked on `on_train_epoch_end` so models without a validation loop (GANs) get figures too.
    """

    key = "figure"
    requires: type = LatentModel

    def __init__(self, every_n_epochs: int = 1, seed: int = 0) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs, self.seed = every_n_epochs, seed
        self.source: object | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.check(pl_module)

    def check(self, model: object) -> None:
        """Raise TypeError when `model` cannot be drawn by this callback."""
        check_protocol(model, self.requires, type(self).__name__)

    def images_needed(self) -> int:
        """How many validation images `make_figure` reads (0: none), so the shared batch is read once."""
        return 0

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if self.source is None:  # resolved once: later epochs reuse the same images
            self.source = shared_images(trainer)
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            log_figure(trainer, self.key, self.draw(pl_module, self.source))
        if isinstance(self.source, SharedImages) and self is last_figure_callback(trainer):
            self.source.release()

    def draw(self, model: LightningModule, data: object) -> Figure:
        """`make_figure` under eval() and no_grad(); usable without a Trainer."""
        with evaluating(model):
            return self.make_figure(model, data)

    def make_figure(self, model: LightningModule, data: object) -> Figure:
        raise NotImplementedError
