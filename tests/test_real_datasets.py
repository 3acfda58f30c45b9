"""The datamodules on the offline real copies under GENLAB_SHARED_DATA (each test skips when its copy is absent)."""

import pytest
import torch
from test_datamodules import check_batch, sizes

from genlab.datamodules import CIFAR10, MNIST, CelebA, DatasetNotFoundError, FreyFaces


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
    dm = CelebA(root=str(shared_data), verify=False, batch_size=8)
    with pytest.warns(UserWarning, match="32 of 162770 train images"):
        assert len(dm.official("train")) == 32
    with pytest.warns(UserWarning, match="official val split has no images"):
        dm.setup("fit")  # the shared copy has train images only: val and test are seeded shares of them
    assert sizes(dm) == {"train": 26, "val": 3} and dm.val_batch(2)[0].shape == (2, 3, 64, 64)
