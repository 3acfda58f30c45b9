"""A user's own datamodule, written as in the docs' 15-line example, found by the CLI from the current folder."""

import os
import subprocess
import sys
import textwrap

import numpy as np

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
TINY_CONV = ["--model.latent_dim=4", "--model.widths=[8, 16]"]

USER_DATAMODULE = '''
import numpy as np
import torch
from genlab.datamodules import ImageDataModule


class MyDataModule(ImageDataModule):
    """My images: one .npy of uint8 (N, H, W) per split, and a .npy of labels; val is split off train."""

    image_shape = (1, 16, 16)
    num_classes = 2
    class_names = ["dark", "light"]

    def load_split(self, split):
        images = np.load(self.root / f"{split}_images.npy")
        labels = np.load(self.root / f"{split}_labels.npy")
        return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long()
'''


def test_own_datamodule_by_import_path_from_the_current_folder(tmp_path):
    (tmp_path / "mymod.py").write_text(textwrap.dedent(USER_DATAMODULE))
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        labels = rng.integers(0, 2, 32)
        np.save(tmp_path / f"{split}_labels.npy", labels)
        np.save(tmp_path / f"{split}_images.npy", (labels[:, None, None] * 128 + rng.integers(0, 128, (32, 16, 16)))
                .astype(np.uint8))
    args = ["fit", "--data=mymod.MyDataModule", "--data.root=.", "--data.batch_size=8", "--trainer.max_epochs=1",
            "--figures=false", "--trainer.default_root_dir=runs", *TINY_CONV, *QUIET]
    code = f"from genlab.cli import main; main({args!r})"
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # as conftest: two spinning threads on a busy machine crawl
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list((tmp_path / "runs").rglob("last.ckpt"))
