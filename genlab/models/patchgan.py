"""PatchGAN discriminator (Isola et al., 2017) and the hinge loss (Lim & Ye, 2017; Miyato et al., 2018), as VQGAN
uses them (Esser et al., 2021). Plain `nn.Module` and pure functions: nothing here knows about Lightning."""

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class PatchDiscriminator(nn.Module):
    """Images (B, C, H, W) in [-1, 1] -> a map of logits (B, 1, h, w), one per overlapping patch.

    `layers` stride-2 4x4 convs (channels `width`, doubled at each, at most 8 * width), one stride-1 4x4 conv, then a
    stride-1 4x4 conv to one channel; LeakyReLU(0.2) throughout. The paper's batch norm is replaced by a per-image
    layer norm (GroupNorm with one group): no running statistics that DDP ranks could disagree on, and an image's
    features do not depend on the rest of the batch, which feature matching needs. `features(x)` is the output of
    the last hidden layer, the layer Larsen et al. (2016) match features on.
    """

    def __init__(self, in_channels: int, width: int = 64, layers: int = 2) -> None:
        super().__init__()
        if width < 1 or layers < 1:
            raise ValueError(f"width={width} and layers={layers} must both be positive integers")
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        channels = width
        for k in range(1, layers + 1):  # layers - 1 more stride-2 convs, then a stride-1 one
            out = width * min(2**k, 8)
            stride = 2 if k < layers else 1
            blocks += [nn.Conv2d(channels, out, 4, stride, 1, bias=False), nn.GroupNorm(1, out), nn.LeakyReLU(0.2)]
            channels = out
        self.body = nn.Sequential(*blocks)
        self.head = nn.Conv2d(channels, 1, 4, 1, 1)

    def features(self, x: Tensor) -> Tensor:
        """The last hidden layer's activations (B, C', h', w')."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def patch_sizes(image_shape: Sequence[int], layers: int) -> tuple[int, int]:
    """(h, w) of the logit map for images of `image_shape`; raises a ValueError where it would be empty."""
    _, height, width = image_shape
    for _ in range(layers):
        height, width = height // 2, width // 2  # 4x4, stride 2, padding 1
    height, width = height - 2, width - 2  # two 4x4 stride-1 convs with padding 1
    if height < 1 or width < 1:
        raise ValueError(f"disc_layers={layers} is too deep for images of shape {tuple(image_shape)}: the patch map "
                         f"would be empty; use fewer layers")
    return height, width


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """E max(0, 1 - D(x)) + E max(0, 1 + D(x~)), means over patches and images, in float32."""
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """-E D(x~): the generator's side of the hinge game, a mean over patches and images."""
    return -fake_logits.float().mean()
