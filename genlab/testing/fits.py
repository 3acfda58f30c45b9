"""Short, quiet fits for tests: a CPU Trainer without logger, progress bar or checkpoints, and the values it logs."""

from lightning import Callback, LightningDataModule, LightningModule, Trainer
from torch.utils.data import DataLoader


class LoggedValues(Callback):
    """Every scalar in the trainer's callback metrics, after each training batch and validation epoch."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def _collect(self, trainer: Trainer) -> None:
        self.values.update({key: float(value) for key, value in trainer.callback_metrics.items()})

    def on_train_batch_end(self, trainer: Trainer, *args) -> None:
        self._collect(trainer)

    def on_validation_epoch_end(self, trainer: Trainer, *args) -> None:
        self._collect(trainer)


def quiet_trainer(root=None, **kwargs) -> Trainer:
    """A CPU Trainer with no logger, progress bar, summary or checkpoints, writing (if at all) under `root`."""
    settings = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                    enable_checkpointing=False, default_root_dir=root)
    return Trainer(**{**settings, **kwargs})


def logged_fit(model: LightningModule, root, data: LightningDataModule | DataLoader,
               precision: str = "bf16-mixed", batches: int = 3) -> dict[str, float]:
    """Fit `batches` training batches and one validation batch; every value logged on the way."""
    logged = LoggedValues()
    trainer = quiet_trainer(root, precision=precision, max_epochs=1, limit_train_batches=batches,
                            limit_val_batches=1, num_sanity_val_steps=0, callbacks=[logged])
    trainer.fit(model, datamodule=data) if isinstance(data, LightningDataModule) else trainer.fit(model, data, data)
    return logged.values
