"""Datamodules on tiny fake files in each dataset's real on-disk format, plus the offline real copies when present.

The writers here are shared with test_data_loading.py (fast path, errors, generated data, Lightning)."""

import gzip
import pickle
import struct
import time

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from genlab.datamodules import CIFAR10, MNIST, SVHN, CelebA, DatasetNotFoundError, FreyFaces, ImageDataModule


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
    with pytest.warns(UserWarning, match="2 of 4 test images"):
        dm.setup("fit")
    dm.setup("test")
    assert sizes(dm) == {"train": 6, "val": 2, "test": 2}
    x, y = check_batch(dm, "val", 2)
    assert (y == 0).all()
    first = dm.datasets["train"][0][0]  # 000001.jpg is red
    assert first[0].mean() > 0.9 and first[1:].mean() < 0.1
    with pytest.raises(DatasetNotFoundError, match="list_attr_celeba.txt"):
        CelebA(root=str(tmp_path), image_size=16, crop=32).setup("fit")


def test_celeba_empty_splits_fall_back_to_seeded_shares_of_train(tmp_path):
    listed = {f"{k:06d}.jpg": (k - 7) // 2 if k > 8 else 0 for k in range(1, 13)}  # 8 train, 2 val, 2 test
    absent = tuple(name for name, part in listed.items() if part)  # like the shared copy: listed, none present
    write_celeba(tmp_path, listed, absent=absent)
    dm = CelebA(root=str(tmp_path), image_size=16, crop=32, batch_size=2, verify=False, val_fraction=0.25)
    with pytest.warns(UserWarning, match="official val split has no images"):
        dm.setup()
    assert sizes(dm) == {"train": 4, "val": 2, "test": 2}
    held = [set(dm.datasets[split].indices) for split in ("train", "val", "test")]
    assert set.union(*held) == set(range(8)) and sum(map(len, held)) == 8  # disjoint, nothing lost
    check_batch(dm, "val", 2)
    with pytest.raises(DatasetNotFoundError, match="train split is empty"):
        write_celeba(tmp_path / "none", {"000001.jpg": 0, "000002.jpg": 0}, absent=("000001.jpg", "000002.jpg"))
        CelebA(root=str(tmp_path / "none"), image_size=16, crop=32, verify=False).setup("fit")


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
