"""Datamodules on tiny fake files in each dataset's real on-disk format, plus the offline real copies when present."""

import gzip
import pickle
import struct
import time

import numpy as np
import pytest
import torch
from lightning import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from PIL import Image
from scipy.io import savemat
from torch import nn

from genlab.datamodules import (CIFAR10, MNIST, SVHN, CelebA, DatasetNotFoundError, FakeImages, FreyFaces,
                                ImageDataModule, Shapes, default_root)
from genlab.datamodules.shapes import render


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def check_batch(dm: ImageDataModule, split: str = "train", batch_size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch from `split`'s loader has the contract's shape, dtype and range; returns it."""
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    x, y = next(iter(loader))
    assert x.shape == (batch_size, *dm.image_shape) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and y.shape == (batch_size,) and y.dtype == torch.int64
    return x, y


def sizes(dm: ImageDataModule) -> dict[str, int]:
    return {split: len(dataset) for split, dataset in dm.datasets.items()}


# ---- writers for the real file formats --------------------------------------------------------------------------


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    """LeCun's idx format: 0x00 0x00 0x08 (uint8) ndim, big-endian sizes, then the bytes."""
    data = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist(root, gz: bool, n_train: int = 20, n_test: int = 10, splits=("train", "t10k")) -> dict:
    raw, out = root / "MNIST" / "raw", {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        if prefix in splits:
            images, labels = rng(n).integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10
            write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz)
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz)
            out[prefix] = (images, labels)
    return out


def write_cifar(root, batches: dict[str, int]) -> dict[str, dict]:
    """Python-2-style pickles: str keys, `data` (N, 3072) as R, G, B planes of 32x32."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for i, (name, n) in enumerate(batches.items()):
        entry = {"batch_label": name, "data": rng(i).integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng(i).integers(0, 10, n)], "filenames": [f"{k}.png" for k in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        written[name] = entry
    meta = {"label_names": [f"class{k}" for k in range(10)], "num_cases_per_batch": 10000, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


def write_svhn(root, split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The .mat layout: X (32, 32, 3, N) uint8, y (N, 1) in 1..10 where 10 is the digit 0."""
    x = rng(n).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
    return x, y


def write_celeba(root, partition: dict[str, int], absent: tuple[str, ...] = ()) -> None:
    """Small 40x50 solid-colour JPEGs (red, green, blue in turn) and list_eval_partition.txt (CRLF, as official)."""
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for k, name in enumerate(partition):
        if name not in absent:
            pixels = np.zeros((50, 40, 3), dtype=np.uint8)
            pixels[..., k % 3] = 255
            Image.fromarray(pixels).save(folder / name)
    lines = "".join(f"{name} {part}\r\n" for name, part in partition.items())
    (root / "celeba" / "list_eval_partition.txt").write_text(lines, newline="")


def write_frey(root, n: int) -> np.ndarray:
    """`ff` (560, N) uint8: face k, a (28, 20) array, flattened row-major into column k."""
    faces = rng(n).integers(0, 256, (n, 28, 20), dtype=np.uint8)
    (root / "frey").mkdir(parents=True)
    savemat(root / "frey" / "frey_rawface.mat", {"ff": faces.reshape(n, 560).T})
    return faces


# ---- MNIST --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_mnist_reads_idx_files_plain_and_gzipped(tmp_path, gz):
    written = write_mnist(tmp_path, gz)
    dm = MNIST(root=str(tmp_path), batch_size=4, val_fraction=0.25, verify=not gz)
    assert dm.image_shape == (1, 28, 28) and dm.num_classes == 10
    dm.setup("fit")
    dm.setup("test")
    assert sizes(dm) == {"train": 15, "val": 5, "test": 10}
    check_batch(dm, "train")
    check_batch(dm, "test")
    images, labels = written["train"]
    first_val = dm.split_indices["val"][0]
    x, y = dm.datasets["val"][0]
    assert torch.equal((x * 255).round().byte()[0], torch.from_numpy(images[first_val])) and y == labels[first_val]
    assert torch.equal(dm.datasets["test"].labels, torch.arange(10))


def test_mnist_gz_fails_checksum_when_verifying(tmp_path):
    write_mnist(tmp_path, gz=True)
    with pytest.raises(DatasetNotFoundError, match="verify false"):
        MNIST(root=str(tmp_path)).setup("fit")


def test_mnist_loads_only_what_the_stage_needs(tmp_path):
    write_mnist(tmp_path, gz=False, splits=("t10k",))
    dm = MNIST(root=str(tmp_path), batch_size=2)
    dm.setup("test")
    assert sizes(dm) == {"test": 10}
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte"):
        dm.setup("fit")


def test_mnist_binarize_dynamic_for_train_fixed_for_val(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    for prefix in ("train", "t10k"):  # mid-grey everywhere: every pixel is a fair coin
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.full((10, 28, 28), 128, dtype=np.uint8), gz=False)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.zeros(10, dtype=np.uint8), gz=False)
    dm = MNIST(root=str(tmp_path), binarize=True, val_fraction=0.2, batch_size=2)
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    first, second = train[0][0], train[0][0]
    assert set(first.unique().tolist()) == {0.0, 1.0} and not torch.equal(first, second)
    assert set(val[0][0].unique().tolist()) == {0.0, 1.0} and torch.equal(val[0][0], val[0][0])
    again = MNIST(root=str(tmp_path), binarize=True, val_fraction=0.2, batch_size=2)
    again.setup("fit")
    assert torch.equal(dm.val_batch(2)[0], again.val_batch(2)[0])


# ---- CIFAR-10, SVHN, CelebA, Frey -----------------------------------------------------------------------------------


def test_cifar10_pickles_partial_copy_unverified(tmp_path):
    written = write_cifar(tmp_path, {"data_batch_1": 6, "data_batch_2": 4, "test_batch": 5})
    dm = CIFAR10(root=str(tmp_path), batch_size=2, val_fraction=0.2, verify=False)
    assert dm.image_shape == (3, 32, 32) and dm.num_classes == 10
    with pytest.warns(UserWarning, match="data_batch_3, data_batch_4, data_batch_5"):
        dm.setup("fit")
    dm.setup("test")
    assert sizes(dm) == {"train": 8, "val": 2, "test": 5}
    check_batch(dm, "train", 2)
    x, y = dm.datasets["test"][0]
    planes = torch.from_numpy(written["test_batch"]["data"][0].reshape(3, 32, 32))  # R, G, B planes
    assert torch.equal((x * 255).round().byte(), planes) and y == written["test_batch"]["labels"][0]


def test_cifar10_verified_needs_every_batch_with_official_md5(tmp_path):
    write_cifar(tmp_path, {"data_batch_1": 2})
    with pytest.raises(DatasetNotFoundError, match="data_batch_2.*verify false"):
        CIFAR10(root=str(tmp_path)).setup("fit")
    write_cifar(tmp_path / "full", {f"data_batch_{i}": 2 for i in range(1, 6)})
    with pytest.raises(DatasetNotFoundError, match="checksum"):
        CIFAR10(root=str(tmp_path / "full")).setup("fit")


def test_svhn_mat_files_and_digit_zero_label(tmp_path):
    x, y = write_svhn(tmp_path, "train", 20)
    write_svhn(tmp_path, "test", 10)
    dm = SVHN(root=str(tmp_path), batch_size=4, val_fraction=0.25, verify=False)
    assert dm.image_shape == (3, 32, 32) and dm.num_classes == 10
    dm.setup()
    assert sizes(dm) == {"train": 15, "val": 5, "test": 10}
    check_batch(dm, "val")
    assert sorted(dm.datasets["test"].labels.tolist()) == sorted(list(range(10)))  # 10 became 0
    k = int(dm.split_indices["train"][0])
    image, label = dm.datasets["train"][0]
    assert torch.equal((image * 255).round().byte(), torch.from_numpy(x[..., k]).permute(2, 0, 1))
    assert label == y[k, 0] % 10
    with pytest.raises(DatasetNotFoundError, match="checksum"):
        SVHN(root=str(tmp_path)).setup("fit")


def test_celeba_official_partition_lazy_jpegs(tmp_path):
    names = {f"{k:06d}.jpg": part for k, part in zip(range(1, 13), [0] * 6 + [1] * 2 + [2] * 4)}
    write_celeba(tmp_path, names, absent=("000011.jpg", "000012.jpg"))  # like a subset: listed, not present
    dm = CelebA(root=str(tmp_path), image_size=16, crop=32, batch_size=2, verify=False)
    assert dm.image_shape == (3, 16, 16) and dm.num_classes is None
    dm.setup("fit")
    with pytest.warns(UserWarning, match="2 of 4 test images"):
        dm.setup("test")
    assert sizes(dm) == {"train": 6, "val": 2, "test": 2}
    x, y = check_batch(dm, "val", 2)
    assert (y == 0).all()
    first = dm.datasets["train"][0][0]  # 000001.jpg is red
    assert first[0].mean() > 0.9 and first[1:].mean() < 0.1
    with pytest.raises(DatasetNotFoundError, match="list_attr_celeba.txt"):
        CelebA(root=str(tmp_path), image_size=16, crop=32).setup("fit")


def test_celeba_empty_split_is_an_error(tmp_path):
    write_celeba(tmp_path, {f"{k:06d}.jpg": 0 for k in range(1, 5)} | {"000005.jpg": 1, "000006.jpg": 1},
                 absent=("000005.jpg", "000006.jpg"))
    with pytest.raises(DatasetNotFoundError, match="val split is empty"):
        CelebA(root=str(tmp_path), image_size=16, crop=32, verify=False).setup("fit")


def test_frey_faces_non_square_seeded_three_way_split(tmp_path):
    faces = write_frey(tmp_path, 50)
    dm = FreyFaces(root=str(tmp_path), batch_size=4)
    assert dm.image_shape == (1, 28, 20) and dm.num_classes is None
    dm.setup()
    assert sizes(dm) == {"train": 41, "val": 4, "test": 5}
    _, y = check_batch(dm, "train")
    assert (y == 0).all()
    served = torch.cat([d.images for d in dm.datasets.values()])[:, 0]
    assert sorted(map(bytes, served.numpy())) == sorted(map(bytes, faces))  # every face, each exactly once
    again = FreyFaces(root=str(tmp_path), batch_size=4)
    again.setup()
    assert torch.equal(dm.val_batch(4)[0], again.val_batch(4)[0])
    assert torch.equal(dm.datasets["test"].images, again.datasets["test"].images)


@pytest.mark.parametrize("cls, folder, expected", [
    (MNIST, "MNIST/raw", "train-images-idx3-ubyte"), (CIFAR10, "cifar-10-batches-py", "data_batch_1"),
    (SVHN, "", "train_32x32.mat"), (CelebA, "celeba", "list_eval_partition.txt"),
    (FreyFaces, "frey", "frey_rawface.mat")])
@pytest.mark.parametrize("verify", [True, False])
def test_missing_files_raise_fast_with_folder_and_file_names(tmp_path, cls, folder, expected, verify):
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as error:
        cls(root=str(tmp_path), verify=verify).setup("fit")
    assert time.perf_counter() - start < 5  # no reading, no network: only file-existence checks
    message = str(error.value)
    assert str(tmp_path / folder) in message and expected in message and "GENLAB_DATA" in message
    assert isinstance(error.value, FileNotFoundError) and error.value.dataset == cls.__name__


# ---- the offline real copies ----------------------------------------------------------------------------------------


def test_real_mnist(shared_data):
    raw = shared_data / "MNIST" / "raw"
    if not (raw / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"no MNIST copy in {raw}")
    before = sorted(p.name for p in raw.iterdir())
    dm = MNIST(root=str(shared_data), batch_size=8)
    dm.setup("fit")
    dm.setup("test")
    assert sizes(dm) == {"train": 54000, "val": 6000, "test": 10000}
    labels = torch.cat([dm.datasets["train"].labels, dm.datasets["val"].labels])
    assert torch.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    check_batch(dm, "val", 8)
    assert sorted(p.name for p in raw.iterdir()) == before  # read in place: nothing extracted into the shared copy


def test_real_frey_faces(shared_data):
    if not (shared_data / "frey" / "frey_rawface.mat").exists():
        pytest.skip(f"no Frey faces in {shared_data / 'frey'}")
    dm = FreyFaces(root=str(shared_data))
    dm.setup()
    images = torch.cat([d.images for d in dm.datasets.values()])
    assert len(images) == 1965 and sizes(dm)["test"] == 196
    assert images.float().mean().item() == pytest.approx(154.46, abs=0.01)


def test_real_cifar10_subset_unverified(shared_data):
    if not (shared_data / "cifar-10-batches-py" / "data_batch_1").exists():
        pytest.skip(f"no CIFAR-10 copy in {shared_data}")
    dm = CIFAR10(root=str(shared_data), verify=False)
    with pytest.warns(UserWarning, match="data_batch_2"):
        images, labels = dm.load_split("train")
    assert images.shape == (200, 3, 32, 32) and labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    with pytest.raises(DatasetNotFoundError, match="test_batch"):
        dm.setup("test")


def test_real_celeba_subset_unverified(shared_data):
    if not (shared_data / "celeba" / "list_eval_partition.txt").exists():
        pytest.skip(f"no CelebA copy in {shared_data}")
    dm = CelebA(root=str(shared_data), verify=False)
    with pytest.warns(UserWarning, match="32 of 162770 train images"):
        train = dm.make_dataset("train")
    assert len(train) == 32 and train[0][0].shape == (3, 64, 64)
    with pytest.raises(DatasetNotFoundError, match="val split is empty"):
        dm.make_dataset("val")


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
                                                        val_fraction=val_fraction))
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
