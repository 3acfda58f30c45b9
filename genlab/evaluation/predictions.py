"""`PredictionWriter`: what `genlab predict` writes for a generative model, into the run's `predictions/` folder.

- `samples.pt` / `samples.png`: `num_samples` draws at `temperature` from generator seed `seed` (conditional
  models: under `labels`, or one of each class in turn; image-conditioned ones under the first predict images);
- `reconstructions.pt` / `reconstructions.png` (inputs above their reconstructions) for models that reconstruct;
- `codes.pt` (`{"codes", "labels"}`) and `codes.npy` / `labels.npy` for models with a latent code.
Under DDP every rank writes its own share, with `_rank<r>` in the file names.
"""

from pathlib import Path

import numpy as np
import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from ..figures.base import condition_kind, decode_condition, evaluating
from ..figures.draw import grid_figure, stack_rows
from ..models.protocols import LatentModel, Sampler


class PredictionWriter(BasePredictionWriter):
    """Writes samples, reconstructions and latent codes (see the module doc) at the end of `trainer.predict`.

    Args:
        num_samples: samples to draw; 0 draws none.
        temperature: scale of the prior's standard deviation (every `Sampler` takes one).
        seed: seed of the sampling noise.
        labels: class labels to sample under (label-conditioned models), cycled over `num_samples`.
        out_dir: the folder; None: `<run folder>/predictions`.
    """

    def __init__(self, num_samples: int = 64, temperature: float = 1.0, seed: int = 0, labels: list[int] | None = None,
                 out_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        if num_samples < 0 or temperature <= 0:
            raise ValueError(f"need num_samples >= 0 (got {num_samples}) and temperature > 0 (got {temperature})")
        self.num_samples, self.temperature, self.seed, self.labels = num_samples, temperature, seed, labels
        self.out_dir = out_dir
        self.parts: dict[str, list[Tensor]] = {}

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.parts = {"inputs": [], "reconstructions": [], "codes": [], "labels": []}

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: object,
                           batch_indices: object,
                           batch: object, batch_idx: int, dataloader_idx: int) -> None:
        if not isinstance(pl_module, LatentModel):
            return
        x, y = batch[0], batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        y = torch.zeros(len(x), dtype=torch.long, device=x.device) if y is None else y
        with evaluating(pl_module):
            recon = prediction if isinstance(prediction, Tensor) and prediction.shape == x.shape else \
                pl_module.reconstruct(x, y)
            codes = pl_module.encode(x, y).flatten(1) if pl_module.latent_dim > 0 else None
        if sum(len(t) for t in self.parts["inputs"]) < 32:
            self.parts["inputs"].append(x[:32].cpu())
        self.parts["reconstructions"].append(recon.float().cpu())
        self.parts["labels"].append(y.cpu())
        if codes is not None:
            self.parts["codes"].append(codes.float().cpu())

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        folder = Path(self.out_dir or Path(trainer.log_dir or trainer.default_root_dir) / "predictions")
        folder.mkdir(parents=True, exist_ok=True)
        suffix = f"_rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        written = []
        if self.parts["reconstructions"]:
            recon = torch.cat(self.parts["reconstructions"])
            written.append(save(folder / f"reconstructions{suffix}.pt", recon))
            inputs = torch.cat(self.parts["inputs"])[:16]
            grid_figure(stack_rows([inputs, recon[:len(inputs)]]), ncol=len(inputs),
                        row_labels=["input", "reconstruction"]).savefig(folder / f"reconstructions{suffix}.png")
        if self.parts["codes"]:
            codes, labels = torch.cat(self.parts["codes"]), torch.cat(self.parts["labels"])
            written.append(save(folder / f"codes{suffix}.pt", {"codes": codes, "labels": labels}))
            np.save(folder / f"codes{suffix}.npy", codes.numpy())
            np.save(folder / f"labels{suffix}.npy", labels.numpy())
        if self.num_samples and isinstance(pl_module, Sampler):
            with evaluating(pl_module):
                samples = self.draw(pl_module, trainer).float().cpu()
            written.append(save(folder / f"samples{suffix}.pt", samples))
            ncol = int(np.ceil(np.sqrt(len(samples))))
            grid_figure(samples, ncol=ncol, title=f"{len(samples)} samples, T = {self.temperature:g}").savefig(
                folder / f"samples{suffix}.png")
        if trainer.is_global_zero:
            print(f"genlab: predictions written to {folder}: {', '.join(p.name for p in written)}")
        self.parts = {}

    def draw(self, model: LightningModule, trainer: Trainer) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        kind, y = condition_kind(model), None
        if kind == "label":
            classes = self.labels or list(range(int(model.hparams.get("num_classes") or 10)))
            y = torch.tensor(classes, device=model.device)[torch.arange(self.num_samples) % len(classes)]
        elif kind == "image":
            x = torch.cat(self.parts["inputs"]).to(model.device)
            picks = torch.arange(self.num_samples) % len(x)
            y = decode_condition(model, x[picks], None)
        return model.sample(self.num_samples, y, generator=generator, temperature=self.temperature)


def save(path: Path, value: object) -> Path:
    torch.save(value, path)
    return path
