"""`StageSteps`: Lightning's training, validation and test steps, written once for every model family.

Each step is the family's `_shared_step(batch, stage)`; `log_terms` is the logging policy the loss-based families
share: every term as `<stage>/<name>` (detached tensors: no host sync), the loss on the progress bar, synced across
ranks outside training.
"""

from torch import Tensor

Batch = tuple[Tensor, Tensor]


class StageSteps:
    """Mixin placed before `LightningModule`; the class defines `_shared_step(batch, stage)`."""

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def log_terms(self, stage: str, terms: dict[str, Tensor], batch_size: int,
                  extra: dict[str, Tensor] | None = None) -> None:
        """Log `terms` (with "loss") as `<stage>/<name>`, plus `extra` (already named) beside them."""
        logged = {f"{stage}/{name}": value.detach() for name, value in terms.items() if name != "loss"}
        sync = stage != "train"
        self.log(f"{stage}/loss", terms["loss"].detach(), prog_bar=True, batch_size=batch_size, sync_dist=sync)
        self.log_dict({**logged, **(extra or {})}, batch_size=batch_size, sync_dist=sync)
