"""Hostile data files (corrupt or empty CelebA JPEGs met mid-epoch, a Frey .mat of the wrong shape), exact
mid-epoch resume of CelebA's lazily decoded loader, and the training order's dependence on the run's seed."""

import warnings

import numpy as np
import pytest
import torch
from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from scipy.io import savemat
from test_data_loading import Tiny

from genlab.datamodules import CelebA, FakeImages, FreyFaces
from genlab.datamodules.loader import BatchLoader, EpochOrder, ItemLoader, SkipUnreadable
from genlab.errors import GenlabError

OPTIONS = dict(image_size=8, crop=32, batch_size=2, verify=False)


def write_faces(root, n_train: int = 10, bad: dict[int, bytes] | None = None) -> list[str]:
    """A CelebA folder of distinct 40x50 JPEGs (image k is grey level 20k): n_train train, 2 val, 2 test; image k
    of `bad` holds those bytes instead. Returns the file names of the train images."""
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    parts = [0] * n_train + [1, 1, 2, 2]
    names = [f"{k + 1:06d}.jpg" for k in range(len(parts))]
    for k, name in enumerate(names):
        Image.fromarray(np.full((50, 40, 3), 10 * k, dtype=np.uint8)).save(folder / name, quality=95)
        if bad and k in bad:
            (folder / name).write_bytes(bad[k])
    text = "".join(f"{name} {part}\r\n" for name, part in zip(names, parts, strict=True))
    (root / "celeba" / "list_eval_partition.txt").write_text(text, newline="")
    return names[:n_train]


def cut_jpeg(root) -> bytes:
    """The first half of a valid JPEG: opens, fails when decoded."""
    path = root / "whole.jpg"
    Image.fromarray(np.full((50, 40, 3), 99, dtype=np.uint8)).save(path)
    return path.read_bytes()[: path.stat().st_size // 2]


@pytest.fixture
def hostile_celeba(tmp_path) -> tuple:
    """Fake CelebA whose 3rd train image is cut and 6th is empty (0 bytes): (root, names of the bad files)."""
    names = write_faces(tmp_path, bad={2: cut_jpeg(tmp_path), 5: b""})
    return tmp_path, [names[2], names[5]]


# ---- corrupt and empty JPEGs ----------------------------------------------------------------------------------------


def test_lazy_celeba_skips_bad_jpegs_mid_epoch_with_one_warning_each(hostile_celeba):
    root, bad = hostile_celeba
    dm = CelebA(root=str(root), **OPTIONS)
    loader = dm.train_dataloader()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        epochs = [torch.cat([x for x, _ in loader]) for _ in range(2)]
    assert [len(images) for images in epochs] == [8, 8]  # 10 train images, 2 unreadable
    messages = [str(w.message) for w in caught if "CelebA" in str(w.message)]
    assert len(messages) == 2 and all(any(name in m for m in messages) for name in bad), messages
    assert all("\n" not in m for m in messages)


def test_lazy_celeba_stops_at_a_bad_jpeg_with_one_line_when_asked(hostile_celeba):
    root, bad = hostile_celeba
    loader = CelebA(root=str(root), on_bad_file="error", **OPTIONS).train_dataloader()
    with pytest.raises(GenlabError, match="cannot read .*(" + "|".join(bad) + ")") as error:
        list(loader)
    assert "\n" not in str(error.value) and "on_bad_file warn" in str(error.value)


def test_a_batch_with_nothing_readable_is_skipped_alone_and_stops_ddp(hostile_celeba):
    root, bad = hostile_celeba
    dm = CelebA(root=str(root), **{**OPTIONS, "batch_size": 1})
    with pytest.warns(UserWarning, match="CelebA: skipped"):
        assert len(list(dm.train_dataloader())) == 8
    train = dm.datasets["train"]
    ranks = [ItemLoader(train, batch_size=1, sampler=EpochOrder(len(train), True, 0, rank, 2),
                        collate_fn=SkipUnreadable()) for rank in (0, 1)]
    with pytest.raises(GenlabError, match="every image of a batch is unreadable .*under DDP"):
        for loader in ranks:  # the two bad files fall to one rank or the other
            list(loader)


def test_trainer_fits_an_epoch_over_bad_jpegs(hostile_celeba):
    root, _ = hostile_celeba
    trainer = Trainer(default_root_dir=root, max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match="CelebA: skipped"):
        trainer.fit(Tiny((3, 8, 8)), datamodule=CelebA(root=str(root), **OPTIONS))
    assert trainer.state.finished and trainer.global_step in (4, 5)  # 5 batches, unless both bad ones share one


def test_cached_celeba_leaves_bad_jpegs_out_or_stops(hostile_celeba):
    root, bad = hostile_celeba
    cached = CelebA(root=str(root), cache=True, cache_dir=str(root / "cache"), **OPTIONS)
    with pytest.warns(UserWarning, match=f"CelebA: skipped 2 of 14 files .*{bad[0]}.*{bad[1]}"):
        cached.prepare_data()
        cached.setup("fit")
    assert len(cached.datasets["train"]) == 8 and len(torch.cat([x for x, _ in cached.train_dataloader()])) == 8
    strict = CelebA(root=str(root), cache=True, cache_dir=str(root / "cache"), on_bad_file="error", **OPTIONS)
    with pytest.raises(GenlabError, match=f"cannot read .*{bad[0]}") as error:
        strict.prepare_data()  # the cache built above (with its two bad rows) is reused, and refused
    assert "\n" not in str(error.value)


def test_on_bad_file_is_checked():
    with pytest.raises(ValueError, match="on_bad_file must be warn or error, got 'skip'"):
        CelebA(on_bad_file="skip")


# ---- Frey .mat of the wrong shape -----------------------------------------------------------------------------------


@pytest.mark.parametrize("content, found", [
    ({"ff": np.zeros((100, 7), np.uint8)}, r"shape \(100, 7\)"),
    ({"ff": np.zeros((7, 560), np.uint8)}, r"shape \(7, 560\)"),
    ({"ff": np.zeros((560, 4, 2), np.uint8)}, r"shape \(560, 4, 2\)"),
    ({"faces": np.zeros((560, 7), np.uint8)}, r"no 'ff' array \(it holds: faces\)"),
    ({"ff": np.full((560, 7), 300, np.uint16)}, r"values outside 0\.\.255")])
def test_frey_mat_of_the_wrong_shape_is_one_line_naming_file_and_shapes(tmp_path, content, found):
    (tmp_path / "frey").mkdir()
    path = tmp_path / "frey" / "frey_rawface.mat"
    savemat(path, content)
    with pytest.raises(GenlabError, match=found) as error:
        FreyFaces(root=str(tmp_path)).setup("fit")
    message = str(error.value)
    assert str(path) in message and "(560, N)" in message and "\n" not in message


# ---- exact mid-epoch resume of the lazily decoded loader ------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 1])
def test_lazy_celeba_resumes_mid_epoch_at_the_next_batch(tmp_path, num_workers):
    write_faces(tmp_path)
    first = CelebA(root=str(tmp_path), num_workers=num_workers, **OPTIONS).train_dataloader()
    first.sampler.set_epoch(1)
    batches = iter(first)
    served = [next(batches)[0] for _ in range(2)]
    state = first.state_dict()
    rest = [x for x, _ in batches]
    resumed = CelebA(root=str(tmp_path), num_workers=num_workers, **OPTIONS).train_dataloader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)  # as Lightning does before the epoch's first batch
    again = [x for x, _ in resumed]
    assert len(again) == len(rest) == 3 and all(torch.equal(a, b) for a, b in zip(again, rest, strict=True))
    levels = torch.cat(served + rest)[:, 0, 0, 0]
    assert len(levels.unique()) == 10  # the whole epoch: each train image once
    assert len(list(resumed)) == 5  # the pass after it is a whole epoch again


class Recording(Tiny):
    """Tiny, remembering every training batch it sees."""

    def __init__(self) -> None:
        super().__init__((3, 8, 8))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen.append(batch[0].clone())
        return super().training_step(batch, batch_idx)


def test_trainer_resumes_lazy_celeba_mid_epoch_with_the_batches_an_unbroken_run_sees(tmp_path):
    write_faces(tmp_path)
    options = dict(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, max_epochs=2)
    every_3 = ModelCheckpoint(tmp_path / "ckpt", "{step}", every_n_train_steps=3, save_top_k=-1)
    straight = Recording()
    Trainer(callbacks=[every_3], **options).fit(straight, datamodule=CelebA(root=str(tmp_path), **OPTIONS))
    resumed = Recording()  # from step 3: mid-way through the first epoch's 5 batches
    Trainer(enable_checkpointing=False, **options).fit(resumed, datamodule=CelebA(root=str(tmp_path), **OPTIONS),
                                                       ckpt_path=tmp_path / "ckpt" / "step=3.ckpt")
    assert len(straight.seen) == 10 and len(resumed.seen) == 7
    assert all(torch.equal(a, b) for a, b in zip(straight.seen[3:], resumed.seen, strict=True))


# ---- the training order follows (data seed, run seed) ---------------------------------------------------------------


def epoch_orders(monkeypatch, run_seed: str | None, epochs: int = 2, seed: int = 0) -> tuple[list, torch.Tensor]:
    """(train positions visited in each of `epochs` epochs, the train/val split) under PL_GLOBAL_SEED=run_seed."""
    if run_seed is None:
        monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    else:
        monkeypatch.setenv("PL_GLOBAL_SEED", run_seed)
    dm = FakeImages(image_shape=(1, 2, 2), size=50, batch_size=5, seed=seed)
    loader = dm.train_dataloader()
    orders = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        orders.append(loader.sampler.indices())
    return orders, dm.split_indices["train"]


def test_order_follows_the_run_seed_and_the_split_only_the_data_seed(monkeypatch):
    one, split_one = epoch_orders(monkeypatch, "1")
    same, split_same = epoch_orders(monkeypatch, "1")
    other, split_other = epoch_orders(monkeypatch, "2")
    for order in one + other:
        assert sorted(order.tolist()) == list(range(45))  # a permutation of the 45 training positions
    assert all(torch.equal(a, b) for a, b in zip(one, same, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(one, other, strict=True))
    assert not torch.equal(one[0], one[1])  # a fresh order every epoch
    assert torch.equal(split_one, split_same) and torch.equal(split_one, split_other)  # the split: data seed alone
    data_seed, split_data_seed = epoch_orders(monkeypatch, "1", seed=1)
    assert not torch.equal(data_seed[0], one[0]) and not torch.equal(split_data_seed, split_one)


def test_loader_state_keeps_the_order_of_the_run_that_saved_it():
    def loader(run_seed: int | None) -> BatchLoader:
        return BatchLoader(torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1), torch.arange(12), 3,
                           EpochOrder(12, shuffle=True, seed=5, run_seed=run_seed))

    first = loader(7)
    batches = iter(first)
    next(batches)
    state = first.state_dict()
    rest = [y.tolist() for _, y in batches]
    resumed = loader(8)  # e.g. resumed with another --seed_everything
    resumed.load_state_dict(state)
    assert [y.tolist() for _, y in resumed] == rest
    old = loader(8)
    old.load_state_dict({"epoch": 0, "batches": 1})  # a checkpoint from before the run seed was saved
    assert torch.equal(old.sampler.indices(), loader(None).sampler.indices())
