"""The old home of `StageSteps`, the steps-and-logging mixin of `GenerativeModule` (genlab.models.module): classes
written `class Model(WeightsOnlyCheckpoint, StageSteps, LightningModule)` keep working; new ones derive from
`GenerativeModule`."""

from .module import Batch, GenerativeModule, StageSteps

__all__ = ["Batch", "GenerativeModule", "StageSteps"]
