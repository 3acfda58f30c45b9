"""The fast data path (uint8 in memory, whole-batch gathers, (seed, epoch) order, DDP shards), dataset errors, the
generated datasets, and datamodules under Lightning's Trainer and CLI."""

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from test_datamodules import check_batch, sizes, write_cifar, write_frey, write_mnist, write_svhn
from torch import nn
from torchvision import datasets

from genlab.datamodules import (CIFAR10, MNIST, SVHN, CelebA, DatasetCorruptError, FakeImages, FreyFaces, Shapes,
                                default_root)
from genlab.datamodules.loader import BatchLoader, EpochOrder
from genlab.datamodules.shapes import render


def image_bytes(images: torch.Tensor) -> list[bytes]:
    """Each uint8 image as bytes, sorted: equal lists mean equal multisets of images."""
    return sorted(map(bytes, images.reshape(len(images), -1).numpy()))


def epoch_images(dm, splits=("train", "val")) -> torch.Tensor:
    """Every image the loaders serve in one epoch of `splits`, back as uint8 (checks the [0, 1] range on the way)."""
    out = []
    for split in splits:
        loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
        for x, _ in loader:
            assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
            out.append((x * 255).round().byte())
    return torch.cat(out)


# ---- the fast path: same images, deterministic order, shards --------------------------------------------------------


def test_real_mnist_epoch_is_torchvisions_training_set(mnist_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"  # torchvision extracts the .gz files, so it reads from a private copy
    raw.mkdir(parents=True)
    for path in (Path(mnist_root) / "MNIST" / "raw").glob("*.gz"):
        (raw / path.name).write_bytes(path.read_bytes())
    reference = datasets.MNIST(str(tmp_path), train=True, download=True).data  # md5 matches: nothing is fetched
    served = epoch_images(MNIST(root=mnist_root, batch_size=1000))
    assert served.shape == (60000, 1, 28, 28) and image_bytes(served) == image_bytes(reference)


def tiny_files(kind: str, root) -> tuple:
    """(datamodule, every image of the files' train split, uint8 (N, C, H, W)), tiny files in the real formats."""
    if kind == "mnist":
        images = write_mnist(root, gz=True)["train"][0]
        return MNIST(root=str(root), verify=False, batch_size=4), torch.from_numpy(images)[:, None]
    if kind == "svhn":
        x, _ = write_svhn(root, "train", 30)  # (32, 32, 3, N), as in the .mat file
        return SVHN(root=str(root), verify=False, batch_size=4), torch.from_numpy(x).permute(3, 2, 0, 1)
    if kind == "cifar":
        written = write_cifar(root, {"data_batch_1": 20, "data_batch_2": 10})
        planes = np.concatenate([entry["data"] for entry in written.values()])
        return CIFAR10(root=str(root), verify=False, batch_size=4), torch.from_numpy(planes).view(-1, 3, 32, 32)
    if kind == "frey":  # no official split: one epoch of train + val plus the held-out test is the whole file
        return FreyFaces(root=str(root), batch_size=4), torch.from_numpy(write_frey(root, 40))[:, None]
    dm = Shapes(size=50, image_size=16, batch_size=4) if kind == "shapes" else \
        FakeImages(image_shape=(3, 8, 6), size=30, batch_size=4)
    return dm, dm.load_split("train")[0]


@pytest.mark.filterwarnings("ignore:CIFAR10")
@pytest.mark.parametrize("kind", ["mnist", "svhn", "cifar", "frey", "shapes", "fake"])
def test_one_epoch_serves_every_image_once_in_unit_range(tmp_path, kind):
    dm, files = tiny_files(kind, tmp_path)
    served = epoch_images(dm, ("train", "val", "test") if kind == "frey" else ("train", "val"))
    assert image_bytes(served) == image_bytes(files)


def test_order_is_a_function_of_seed_and_epoch():
    first, second = (FakeImages(image_shape=(1, 4, 4), size=40, batch_size=8, seed=3) for _ in range(2))
    one, two = first.train_dataloader(), second.train_dataloader()
    epoch0 = torch.cat([x for x, _ in one])  # a complete pass also advances the epoch by itself
    epoch1 = torch.cat([x for x, _ in one])
    two.sampler.set_epoch(1)  # as Lightning does at the start of every epoch, e.g. after resuming
    assert torch.equal(torch.cat([x for x, _ in two]), epoch1) and not torch.equal(epoch0, epoch1)
    two.sampler.set_epoch(0)
    assert torch.equal(torch.cat([x for x, _ in two]), epoch0)
    other = FakeImages(image_shape=(1, 4, 4), size=40, batch_size=8, seed=4)
    other.split_indices, other.datasets = first.split_indices, first.datasets  # same images, other seed
    assert not torch.equal(torch.cat([x for x, _ in other.train_dataloader()]), epoch0)
    val = [torch.cat([x for x, _ in first.val_dataloader()]) for _ in range(2)]
    assert torch.equal(*val) and torch.equal(val[0], first.val_batch(4)[0])  # fixed order, file order


@pytest.mark.parametrize("size", [10, 11])
def test_ddp_shards_disjoint_equal_length_and_padded_eval(size):
    for epoch in (0, 1):
        shards = []
        for rank in (0, 1):
            order = EpochOrder(size, shuffle=True, seed=0, rank=rank, num_replicas=2)
            order.set_epoch(epoch)
            shards.append(order.indices())
        assert len(shards[0]) == len(shards[1]) == size // 2
        assert not set(shards[0].tolist()) & set(shards[1].tolist())
    evaluation = [EpochOrder(size, shuffle=False, rank=rank, num_replicas=2).indices() for rank in (0, 1)]
    assert len(evaluation[0]) == len(evaluation[1]) and set(torch.cat(evaluation).tolist()) == set(range(size))
    loaders = [BatchLoader(torch.zeros(size, 1, 2, 2, dtype=torch.uint8), torch.arange(size), 2,
                           EpochOrder(size, True, 0, rank, 2)) for rank in (0, 1)]
    assert len(loaders[0]) == len(loaders[1]) == len(list(loaders[0]))  # same number of batches on each rank


def test_mnist_binarize_is_a_fresh_draw_per_batch_fixed_for_val(tmp_path):
    write_mnist(tmp_path, gz=False, n_train=40)
    dm = MNIST(root=str(tmp_path), binarize=True, batch_size=36, val_fraction=0.1)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    a = next(iter(loader))[0]
    loader.sampler.set_epoch(0)  # same images, new draw
    b = next(iter(loader))[0]
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)
    assert torch.equal(dm.val_batch(4)[0], dm.val_batch(4)[0]) and set(dm.val_batch(4)[0].unique().tolist()) <= {0., 1.}


def test_mnist_binarize_draws_each_pixel_with_its_grey_level_as_probability(tmp_path):
    write_mnist(tmp_path, gz=False, n_train=40)
    dm = MNIST(root=str(tmp_path), binarize=True)
    grey = torch.tensor([0, 1, 64, 128, 254, 255], dtype=torch.uint8).repeat(20_000, 1).view(-1, 1, 1, 6)
    draws = dm.transform_batch(grey, train=True)
    p = grey[0].float() / 255
    assert draws.dtype == torch.float32 and set(draws.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(draws[:, 0, 0, [0, 5]].unique(), torch.tensor([0.0, 1.0]))  # p = 0 and 1 exactly
    assert (draws.mean(0) - p).abs().max() < 4 * (0.25 / len(grey)) ** 0.5


# ---- errors -------------------------------------------------------------------------------------------------------


def test_batch_size_larger_than_train_split_fails_at_setup():
    with pytest.raises(ValueError, match=r"batch_size=64 .*FakeImages \(18 images"):
        FakeImages(size=20, batch_size=64).setup("fit")


@pytest.mark.parametrize("kind", ["gz", "idx", "mat", "frey"])
def test_corrupt_files_name_the_file_and_say_refetch(tmp_path, kind):
    if kind in ("gz", "idx"):
        write_mnist(tmp_path, gz=kind == "gz")
        path = tmp_path / "MNIST" / "raw" / ("train-images-idx3-ubyte" + (".gz" if kind == "gz" else ""))
        dm = MNIST(root=str(tmp_path), verify=False)
    elif kind == "mat":
        write_svhn(tmp_path, "train", 10)
        path, dm = tmp_path / "train_32x32.mat", SVHN(root=str(tmp_path), verify=False)
    else:
        write_frey(tmp_path, 10)
        path, dm = tmp_path / "frey" / "frey_rawface.mat", FreyFaces(root=str(tmp_path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a cut download
    with pytest.raises(DatasetCorruptError, match="truncated or corrupt") as error:
        dm.setup("fit")
    assert str(path) in str(error.value) and "fetch it again" in str(error.value)


# ---- generated data -------------------------------------------------------------------------------------------------


def test_shapes_is_deterministic_per_seed_with_known_factors():
    dm = Shapes(size=120, batch_size=16)
    assert dm.image_shape == (1, 32, 32) and dm.num_classes == 3 and len(dm.factor_names) == 5
    dm.setup("fit")
    x, y = check_batch(dm, "train", 16)
    assert sizes(dm) == {"train": 108, "val": 12}
    images, labels = dm.val_batch(10)
    factors = dm.val_factors(10)
    assert factors.shape == (10, 5) and factors.dtype == torch.float32
    assert torch.equal(labels, factors[:, 0].long()) and set(labels.tolist()) <= {0, 1, 2}

    same, other = Shapes(size=120), Shapes(size=120, seed=1)
    assert torch.equal(same.val_batch(10)[0], images) and torch.equal(same.val_factors(10), factors)
    assert not torch.equal(other.val_batch(10)[0], images)
    assert not torch.equal(dm.load_split("test")[0], dm.load_split("train")[0])


def test_shapes_every_class_is_drawn_and_never_clipped():
    dm = Shapes(size=150, image_size=32)
    factors = dm.factors("train")
    images, labels = dm.load_split("train")
    mass = images.float().sum((1, 2, 3)) / 255  # in pixels
    assert set(labels.tolist()) == {0, 1, 2}
    for shape in range(3):
        assert mass[labels == shape].min() > 10  # the smallest ellipse still covers > 10 pixels at 32x32
    centred = factors.clone()
    centred[:, 3:] = 0.5
    centred_mass = render(centred, 32).float().sum((1, 2, 3)) / 255
    # Moving a shape to the edge loses no pixels beyond anti-aliasing noise: the frame never cuts it.
    assert ((mass - centred_mass).abs() / centred_mass).max() < 0.1


def test_shapes_generates_ten_thousand_images_fast():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread's CPU time measures the work itself, not how busy the machine is
    try:
        start = time.process_time()
        images, labels = Shapes(size=10000).load_split("train")
        assert time.process_time() - start < 2.0
    finally:
        torch.set_num_threads(threads)
    assert images.shape == (10000, 1, 32, 32) and images.dtype == torch.uint8 and len(labels) == 10000


def test_fake_images_any_shape_with_or_without_labels():
    dm = FakeImages(image_shape=(3, 16, 12), size=20, batch_size=4, num_classes=None)
    assert dm.image_shape == (3, 16, 12)
    _, y = check_batch(dm, "train")
    assert (y == 0).all() and sizes(dm) == {"train": 18, "val": 2}
    labelled = FakeImages(size=20, num_classes=5)
    assert set(labelled.load_split("train")[1].tolist()) <= set(range(5))
    assert not torch.equal(labelled.load_split("train")[0], labelled.load_split("test")[0])


# ---- arguments, defaults, Lightning -------------------------------------------------------------------------------


@pytest.mark.parametrize("make, bad", [
    (lambda: FakeImages(batch_size=0), "0"), (lambda: FakeImages(val_fraction=1.0), "1.0"),
    (lambda: FakeImages(val_fraction=-0.1), "-0.1"), (lambda: FakeImages(num_workers=-1), "-1"),
    (lambda: FakeImages(image_shape=(1, 0, 3)), r"\(1, 0, 3\)"), (lambda: Shapes(image_size=4), "4"),
    (lambda: Shapes(size=0), "0"), (lambda: CelebA(image_size=0), "image_size=0"),
    (lambda: FakeImages().load_split("valid"), "'valid'"), (lambda: FakeImages().setup("training"), "'training'"),
    (lambda: FakeImages().val_batch(0), "0")])
def test_bad_arguments_name_the_value(make, bad):
    with pytest.raises(ValueError, match=bad):
        make()


def test_default_root_follows_genlab_data(monkeypatch, tmp_path):
    monkeypatch.delenv("GENLAB_DATA", raising=False)
    assert str(default_root()) == "data" and MNIST().root == default_root()
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path))
    assert default_root() == tmp_path and MNIST().root == tmp_path and MNIST(root="elsewhere").root.name == "elsewhere"


class Tiny(LightningModule):
    """The smallest model that consumes (x, y) batches of any image shape."""

    def __init__(self, image_shape: tuple[int, int, int] = (1, 28, 28)) -> None:
        super().__init__()
        self.save_hyperparameters()  # shares the key image_shape with FakeImages: Lightning compares the two
        self.net = nn.Linear(int(np.prod(image_shape)), 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.net(batch[0].flatten(1)).pow(2).mean()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", self.net(batch[0].flatten(1)).pow(2).mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.filterwarnings("ignore:Total length of `list` across ranks is zero")  # no val set: intended
@pytest.mark.parametrize("val_fraction", [0.0, 0.25])
def test_trainer_fits_with_and_without_validation(tmp_path, val_fraction):
    trainer = Trainer(default_root_dir=tmp_path, max_epochs=1, accelerator="cpu", logger=False,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(Tiny((1, 8, 8)), datamodule=FakeImages(image_shape=(1, 8, 8), size=16, batch_size=4,
                                                        val_fraction=val_fraction, on_device=val_fraction > 0))
    assert trainer.num_training_batches == (4 if val_fraction == 0 else 3)
    assert ("val/loss" in trainer.callback_metrics) == (val_fraction > 0)


class LinkedCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.image_shape", "model.image_shape", apply_on="instantiate")


def test_cli_resolves_subclass_and_base_arguments(tmp_path):
    cli = LinkedCLI(Tiny, LightningDataModule, subclass_mode_data=True, run=False, args=[
        "--data=genlab.datamodules.CelebA", "--data.image_size=32", "--data.verify=false", "--data.batch_size=8",
        f"--data.root={tmp_path}", "--trainer.accelerator=cpu", "--trainer.logger=false"])
    dm = cli.datamodule
    assert isinstance(dm, CelebA) and dm.image_shape == (3, 32, 32) and dm.batch_size == 8 and not dm.verify
    assert dm.hparams["image_size"] == 32 and dm.hparams["val_fraction"] == 0.1
    assert cli.model.net.in_features == 3 * 32 * 32  # image_shape reached the model before any setup


def test_cli_fit_on_fake_images_logs_consistent_hparams(tmp_path):
    cli = LinkedCLI(Tiny, LightningDataModule, subclass_mode_data=True, save_config_kwargs={"overwrite": True}, args=[
        "fit", "--data=genlab.datamodules.FakeImages", "--data.image_shape=[1, 8, 8]", "--data.size=16",
        "--data.batch_size=4", "--trainer.max_epochs=1", "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"])
    assert cli.datamodule.hparams_initial["image_shape"] == (1, 8, 8)  # a tuple, like the model's linked value
    assert cli.trainer.state.finished
