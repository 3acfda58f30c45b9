"""Two-process DDP fits on CPU (gloo) through Lightning's own `strategy="ddp"`, for ConvVAE, GAN and VQVAE.

pytest cannot host Lightning's DDP launcher (it re-runs the command line once per extra rank), so the test runs
this file as a script: `python tests/test_ddp.py OUT` fits every model with 2 processes and saves, per rank, the
model's state_dict and the images that rank trained on; the test then compares the ranks.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning import Callback, Trainer, seed_everything

from genlab.callbacks import Reconstructions, SampleGrid
from genlab.datamodules import FakeImages
from genlab.models import GAN, VQVAE, ConvVAE

SHAPE = (1, 8, 8)
MODELS = {
    "ConvVAE": lambda: ConvVAE(SHAPE, latent_dim=4, widths=(4, 8)),
    "GAN": lambda: GAN(SHAPE, latent_dim=4, hidden=(16, 16)),
    # every codebook statistic that must agree across ranks: EMA sums, k-means init, dead-code restarts
    "VQVAE": lambda: VQVAE(SHAPE, num_hiddens=8, num_residual_hiddens=4, num_residual_layers=1, num_embeddings=8,
                           embedding_dim=4, ema=True, kmeans_init=True, dead_code_steps=1),
}


class SeenImages(Callback):
    """Keeps every training image this rank saw (as uint8 bytes)."""

    def __init__(self) -> None:
        self.images: list[bytes] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        x = (batch[0] * 255).round().byte().cpu()
        self.images += [bytes(image.numpy().tobytes()) for image in x]


def fit_all(out: Path) -> None:
    torch.set_num_threads(1)
    rank_dir = f"rank{os.environ.get('LOCAL_RANK', '0')}"  # the launcher sets LOCAL_RANK in the extra process
    for name, make in MODELS.items():
        seed_everything(0, verbose=False)
        model, seen = make(), SeenImages()
        figure = SampleGrid(num_samples=4) if name == "GAN" else Reconstructions(num_images=4)
        trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                          enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                          default_root_dir=out / name / rank_dir, callbacks=[seen, figure])
        trainer.fit(model, datamodule=FakeImages(SHAPE, size=44, batch_size=4, num_classes=None))
        state = {key: value.cpu() for key, value in model.state_dict().items()}
        torch.save({"state": state, "seen": seen.images}, out / f"{name}-rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_two_process_ddp_fits_agree_and_split_the_data(tmp_path):
    root = Path(__file__).parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, str(tmp_path)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in MODELS:
        ranks = [torch.load(tmp_path / f"{name}-rank{rank}.pt") for rank in (0, 1)]
        states = [rank["state"] for rank in ranks]
        assert states[0].keys() == states[1].keys()
        different = [key for key in states[0] if not torch.equal(states[0][key], states[1][key])]
        assert not different, f"{name}: ranks disagree on {different}"
        seen = [rank["seen"] for rank in ranks]
        assert len(seen[0]) == len(seen[1]) == 20  # 40 train images, 20 per rank, 5 batches each
        assert not set(seen[0]) & set(seen[1]), f"{name}: the ranks trained on the same images"
        pngs = [list((tmp_path / name / f"rank{rank}").rglob("*.png")) for rank in (0, 1)]
        assert pngs[0] and not pngs[1], f"{name}: figures must come from rank zero only, got {pngs}"


if __name__ == "__main__":
    fit_all(Path(sys.argv[1]))
