"""`Classifier`: a small conv net trained by genlab itself, whose penultimate layer is the feature space for FID/KID
on machines that cannot download Inception weights (`genlab fit --model Classifier --data MNIST`)."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ConvEncoder, check_batch_shape, check_positive
from .module import GenerativeModule, adam


class Classifier(GenerativeModule):
    """Conv net for any `image_shape` and `num_classes`: stride-2 convs (`widths`), a `feature_dim` ReLU layer (the
    features, `features(x)`), then a linear layer to class logits. `loss(x, y)`: the cross-entropy (nats per image)
    as "loss", and the accuracy, logged for train/val/test.

    Args:
        image_shape: (C, H, W) of the data, checked against every batch; the CLI links it from the datamodule.
        num_classes: number of classes (at least 2); the CLI links it from the datamodule.
        widths: channels of the stride-2 conv layers, one halving of H and W each.
        feature_dim: size of the penultimate ReLU layer, the feature space for FID/KID.
        lr: Adam learning rate.
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), num_classes: int | None = 10,
                 widths: Sequence[int] = (32, 64), feature_dim: int = 128, lr: float = 1e-3) -> None:
        super().__init__()
        if num_classes is None or num_classes < 2:
            raise ValueError(f"num_classes={num_classes!r}: a Classifier needs a dataset with >= 2 classes")
        check_positive(image_shape=image_shape, widths=widths, feature_dim=feature_dim)
        if lr <= 0:
            raise ValueError(f"lr={lr} must be positive")
        self.save_hyperparameters()
        self.image_shape, self.num_classes, self.feature_dim, self.lr = tuple(image_shape), num_classes, feature_dim, lr
        self.body = nn.Sequential(ConvEncoder(image_shape, feature_dim, widths), nn.ReLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features (B, feature_dim) of images in [0, 1]."""
        return self.body(x.to(self.device, torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, num_classes)."""
        return self.head(self.features(x))

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        if y is None:
            raise ValueError("Classifier.loss(x, y) needs the class labels y; got y=None")
        check_batch_shape(self, x)
        logits = self(x)
        return {"loss": F.cross_entropy(logits, y), "accuracy": (logits.argmax(dim=1) == y).float().mean()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self.parameters(), lr=self.lr)
