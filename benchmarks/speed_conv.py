"""The three ways of `speed.py`'s conv case -- the course loop, `genlab fit` and the compute ceiling -- for the course
ConvVAE on SVHN-shaped data (a synthetic file in SVHN's format when the real one is absent)."""

import sys
from pathlib import Path

import numpy as np
import torch

from timing import fit_clock, plain_loop

BATCH, LR, SHAPE = 128, 1e-3, (3, 32, 32)
SVHN_FILE = "train_32x32.mat"


def svhn_root(root: Path | None, cache: Path, num_images: int) -> Path:
    """A folder holding train_32x32.mat: --root if it has one, else a synthetic file of the same format."""
    if root is not None and (root / SVHN_FILE).is_file():
        return root
    path = cache / SVHN_FILE
    if not path.is_file():
        from scipy.io import savemat
        rng = np.random.default_rng(0)
        cache.mkdir(parents=True, exist_ok=True)
        print(f"writing a synthetic SVHN file ({num_images} images) to {path}", file=sys.stderr)
        x = rng.integers(0, 256, (32, 32, 3, num_images), dtype=np.uint8)  # SVHN's layout: X (H, W, C, N)
        y = rng.integers(1, 11, (num_images, 1), dtype=np.uint8)  # labels 1..10, 10 meaning the digit 0
        savemat(path, {"X": x, "y": y})
    return cache


def make_model(device: str):
    from genlab.models import ConvVAE
    torch.manual_seed(0)
    return ConvVAE(SHAPE, latent_dim=128, widths=(32, 64, 128), lr=LR).to(device)


def course(root: Path, device: str, steps: int, warmup: int, bf16: bool, workers: int) -> float:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms
    class UncheckedSVHN(datasets.SVHN):  # the stock class, minus its md5 check (which a synthetic file fails)
        def _check_integrity(self) -> bool:
            return True

    dataset = UncheckedSVHN(str(root), split="train", transform=transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers,
                        pin_memory=device.startswith("cuda"))

    def forever():
        while True:
            yield from loader
    return plain_loop(make_model(device), forever(), device, steps, warmup, bf16, LR, torch.optim.Adam)


def ceiling(device: str, steps: int, warmup: int, bf16: bool) -> float:
    x = torch.rand(BATCH, *SHAPE, generator=torch.Generator().manual_seed(0))
    batch = (x.to(device), torch.zeros(BATCH, dtype=torch.long))

    def same():
        while True:
            yield batch
    return plain_loop(make_model(device), same(), device, steps, warmup, bf16, LR)


def genlab_fit(root: Path, device: str, steps: int, warmup: int, bf16: bool, on_device: bool) -> float:
    from lightning import Trainer

    from genlab.datamodules import SVHN

    clock = fit_clock(warmup, device)
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    trainer = Trainer(accelerator=accelerator, devices=1, max_steps=steps, precision="bf16-mixed" if bf16 else "32",
                      limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[clock])
    data = SVHN(root=str(root), verify=False, batch_size=BATCH, val_fraction=0.0, on_device=on_device)
    trainer.fit(make_model("cpu"), datamodule=data)
    return clock.seconds
