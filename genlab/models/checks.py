"""Cheap checks of what a model is fed: one line naming the batch and the bad values, instead of a crash deep inside
`torch.distributions` or a loss of 700 000 nats from images in [0, 255]."""

import math
from collections.abc import Sequence

import torch
from torch import Tensor

TOLERANCE = 1e-6  # float rounding of images computed in [0, 1] (resizing, averaging)


def check_images(x: Tensor, image_shape: Sequence[int] | None = None, where: str = "images") -> None:
    """Raise a one-line ValueError unless `x` is a batch (B, *image_shape) of finite float images in [0, 1].

    One `aminmax` over the batch (NaN propagates into it, Inf becomes its min or max) and one host sync for its two
    values; no per-element Python. `where` names the batch in the message (e.g. "training batch 12").
    """
    if image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{where}: expected images of shape (batch, {', '.join(map(str, image_shape))}), "
                         f"got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{where}: images must be float in [0, 1], got dtype {x.dtype}; convert them, e.g. "
                         f"x.float() / 255 for uint8 pixels")
    if x.numel() == 0:
        return
    low, high = torch.stack(torch.aminmax(x.detach())).tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{where}: images contain NaN or Inf (min {low}, max {high}); images must be finite "
                         f"values in [0, 1]")
    if low < -TOLERANCE or high > 1 + TOLERANCE:
        raise ValueError(f"{where}: images must be in [0, 1], got values from {low:.4g} to {high:.4g}; rescale "
                         f"them (e.g. divide 0-255 pixels by 255; undo a Normalize(0.5, 0.5))")
