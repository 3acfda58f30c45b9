"""Streaming through LitData: `optimize` writes any datamodule's splits, `Streaming` reads back the same images and
labels; a CLI fit with figures; mid-epoch resume at the next sample; two DDP ranks get disjoint, equal shares.

The DDP check runs this file as a script (`python tests/test_streaming.py ddp DATA OUT`), as tests/test_ddp.py does:
Lightning's DDP launcher re-runs the command line once per extra rank.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

pytest.importorskip("litdata")

from genlab.cli import main as genlab_main  # noqa: E402
from test_datamodules import write_celeba  # noqa: E402

from genlab.datamodules import CelebA, FakeImages, ImageFolder  # noqa: E402
from genlab.datamodules.streaming import META_FILE, Streaming, main, optimize  # noqa: E402
from genlab.models import VAE  # noqa: E402

STREAMING = "genlab.datamodules.streaming.Streaming"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
SHAPE = (1, 8, 8)


def image_multiset(x: torch.Tensor, y: torch.Tensor) -> list[tuple[bytes, int]]:
    """Images (uint8, or float in [0, 1]) with their labels, as a sorted list: equal lists are equal multisets."""
    x = x if x.dtype == torch.uint8 else (x * 255).round().to(torch.uint8)
    return sorted(zip((image.numpy().tobytes() for image in x), y.tolist(), strict=True))


def streamed(data: Streaming, split: str) -> list[tuple[bytes, int]]:
    batches = list(getattr(data, f"{split}_dataloader")())
    return image_multiset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))


def fake_folder(tmp_path: Path, size: int = 45, **kwargs) -> tuple[FakeImages, Path]:
    source = FakeImages(SHAPE, size=size, num_classes=3, batch_size=8, **kwargs)
    return source, optimize(source, tmp_path / "optimized", chunk_bytes=1000, progress=False)


def test_fake_images_stream_back_unchanged_per_split(tmp_path):
    source, out = fake_folder(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == [META_FILE, "test", "train", "val"]
    data = Streaming(str(out), batch_size=8)
    assert data.image_shape == SHAPE and data.num_classes == 3 and data.class_names is None
    assert data.split_sizes == {"train": 41, "val": 4, "test": 45}
    for split in ("train", "val", "test"):
        expected = source.dataset(split)
        assert streamed(data, split) == image_multiset(expected.images, expected.labels), split
    x, y = next(iter(data.train_dataloader()))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and y.dtype == torch.long  # outside a Trainer
    figures = data.val_batch(3)
    assert figures[0].shape == (3, *SHAPE) and torch.equal(figures[0], data.val_batch(3)[0])


def write_png(path: Path, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_image_folder_streams_back_with_its_class_names(tmp_path):
    for k, name in enumerate(["cats", "dogs"]):
        for i in range(10):
            write_png(tmp_path / "images" / name / f"{i}.png", (10 + i, 14 - i), seed=10 * k + i)
    folder = ImageFolder(str(tmp_path / "images"), image_size=8, batch_size=4, cache_dir=str(tmp_path / "cache"),
                         decode_workers=1)
    out = optimize(folder, tmp_path / "optimized", chunk_bytes=2000, progress=False)
    data = Streaming(str(out), batch_size=4)
    assert data.class_names == ["cats", "dogs"] and data.num_classes == 2 and data.image_shape == (3, 8, 8)
    for split in ("train", "val", "test"):
        expected = folder.dataset(split)
        assert streamed(data, split) == image_multiset(expected.images, expected.labels), split


def test_a_lazily_decoded_datamodule_streams_back_unchanged(tmp_path):
    """CelebA without its cache serves float images item by item: written back as the uint8 they came from."""
    write_celeba(tmp_path, {f"{k:06d}.jpg": k % 3 for k in range(1, 13)})
    celeba = CelebA(root=str(tmp_path), image_size=8, crop=32, batch_size=2, verify=False)
    out = optimize(celeba, tmp_path / "optimized", splits=["train", "test"], chunk_bytes=1000, progress=False)
    data = Streaming(str(out), batch_size=2)
    assert data.split_sizes == {"train": 4, "test": 4} and data.image_shape == (3, 8, 8)
    items = [celeba.dataset("test")[i] for i in range(4)]
    expected = image_multiset(torch.stack([x for x, _ in items]), torch.zeros(4, dtype=torch.long))
    assert streamed(data, "test") == expected
    assert data.val_batch(2)[0].shape == (2, 3, 8, 8)  # no val split written: figures use test images


def test_a_remote_folder_is_read_through_litdata_downloader(tmp_path):
    """LitData's `local:` prefix takes the object-store path (download into the cache) on a local folder."""
    source, out = fake_folder(tmp_path)
    data = Streaming(f"local:{out}", batch_size=8, cache_dir=str(tmp_path / "cache"))
    assert data.image_shape == SHAPE and data.split_sizes["train"] == 41
    expected = source.dataset("train")
    assert streamed(data, "train") == image_multiset(expected.images, expected.labels)
    assert any((tmp_path / "cache").rglob("*.bin"))  # the chunks were fetched into the cache
    assert data.val_batch(4)[0].shape == (4, *SHAPE)  # figures read by index through the same cache


def test_bad_input_gets_one_line(tmp_path):
    source, out = fake_folder(tmp_path)
    attempts = [
        (lambda: optimize(source, out), "already exists and is not empty"),
        (lambda: main(["optimize", "--data=FakeImages"]), "--output DIR is required"),
        (lambda: main(["optimize", f"--output={tmp_path / 'new'}"]), "--data NAME is required"),
        (lambda: main(["convert"]), "unknown action 'convert'"),
        (lambda: optimize(source, tmp_path / "other", splits=["training"]), "splits must be"),
        (lambda: optimize(source, "s3://bucket/data"), "writes to a local folder"),
        (lambda: Streaming(str(tmp_path)), f"{META_FILE} not found"),
    ]
    for attempt, message in attempts:
        with pytest.raises(ValueError, match=message) as error:  # GenlabError is a ValueError
            attempt()
        assert "\n" not in str(error.value)
    assert not (tmp_path / "new").exists() and not (tmp_path / "other").exists()


def test_optimize_command_then_fit_with_figures_writes_last_checkpoint(tmp_path):
    out = tmp_path / "optimized"
    main(["optimize", "--data=FakeImages", "--data.image_shape=[1, 8, 8]", "--data.size=32", f"--output={out}",
          "--chunk_bytes=1000"])
    assert (out / META_FILE).is_file()
    cli = genlab_main(["fit", "--model=VAE", "--model.hidden=[16]", "--model.latent_dim=2", f"--data={STREAMING}",
                       f"--data.input_dir={out}", "--data.batch_size=8", "--trainer.max_epochs=1",
                       f"--trainer.default_root_dir={tmp_path}", *QUIET])
    assert cli.model.image_shape == SHAPE  # linked from genlab.json before setup
    assert [p.name for p in tmp_path.rglob("last.ckpt")] == ["last.ckpt"]
    assert list(tmp_path.rglob("figures/reconstructions/*.png"))  # figures read val_batch


class SeenBatches(Callback):
    """Every training batch, as the bytes of its images (uint8 again)."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images = (batch[0] * 255).round().to(torch.uint8).cpu()
        self.batches.append([image.numpy().tobytes() for image in images])


def train(folder: Path, max_steps: int, root: Path, ckpt_path: str | None = None, every: int | None = None) -> list:
    seen = SeenBatches()
    callbacks = [seen] + ([ModelCheckpoint(root, every_n_train_steps=every, save_top_k=-1, filename="{step}")]
                          if every else [])
    trainer = Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=bool(every), num_sanity_val_steps=0,
                      default_root_dir=root, callbacks=callbacks)
    trainer.fit(VAE(SHAPE, hidden=[8], latent_dim=2), datamodule=Streaming(str(folder), batch_size=8, seed=1),
                ckpt_path=ckpt_path)
    return seen.batches


def test_mid_epoch_resume_continues_at_the_next_sample_then_reshuffles(tmp_path):
    _, out = fake_folder(tmp_path)  # 41 training images: 6 batches per epoch, in 3 chunks
    uninterrupted = train(out, 12, tmp_path / "full")
    assert uninterrupted[:6] != uninterrupted[6:]  # each epoch has its own order
    stopped = train(out, 3, tmp_path / "stopped", every=3)
    resumed = train(out, 12, tmp_path / "resumed", ckpt_path=str(tmp_path / "stopped" / "step=3.ckpt"))
    assert stopped + resumed == uninterrupted


def test_loader_state_dict_round_trip_outside_lightning(tmp_path):
    _, out = fake_folder(tmp_path)
    loader = Streaming(str(out), batch_size=8, seed=2).train_dataloader()
    batches = iter(loader)
    [next(batches) for _ in range(2)]
    state = loader.state_dict()
    rest = [y.tolist() for _, y in batches]
    again = Streaming(str(out), batch_size=8, seed=2).train_dataloader()
    again.load_state_dict(state)
    assert [y.tolist() for _, y in again] == rest and len(rest) == 4


def fit_ddp(data: Path, out: Path) -> None:
    """Run by the test below in a subprocess: one epoch on 2 CPU processes, each saving the images it trained on."""
    torch.set_num_threads(1)
    seen = SeenBatches()
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=out, callbacks=[seen])
    trainer.fit(VAE(SHAPE, hidden=[8], latent_dim=2), datamodule=Streaming(str(data), batch_size=4))
    torch.save(seen.batches, out / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow  # about 25 s: two processes start and import torch
def test_two_ddp_ranks_stream_disjoint_equal_shares(tmp_path):
    _, out = fake_folder(tmp_path)
    root = Path(__file__).parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, "ddp", str(out), str(tmp_path)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [sum(torch.load(tmp_path / f"rank{rank}.pt"), []) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 20  # 41 images: 20 each, the odd one dropped so the ranks stay in step
    assert not set(ranks[0]) & set(ranks[1])


if __name__ == "__main__" and sys.argv[1:2] == ["ddp"]:
    fit_ddp(Path(sys.argv[2]), Path(sys.argv[3]))
