"""The GANs' networks: the course MLP discriminator and DCGAN's generator and discriminator (Radford et al., 2015)."""

from collections.abc import Sequence
from math import prod

from torch import Tensor, nn

from .attention import attention_at, check_attention_resolutions


class MLPDiscriminator(nn.Sequential):
    """Images (B, C, H, W) -> logits (B, 1): Linear + LeakyReLU(0.2) + Dropout (none at 0) per hidden width (the
    course's D)."""

    def __init__(self, image_shape: Sequence[int], hidden: Sequence[int] = (1024, 512, 256),
                 dropout: float = 0.3) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        features = prod(image_shape)
        for width in hidden:
            layers += [nn.Linear(features, width), nn.LeakyReLU(0.2), *([nn.Dropout(dropout)] if dropout else [])]
            features = width
        super().__init__(*layers, nn.Linear(features, 1))


def dcgan_depth(image_shape: Sequence[int]) -> tuple[int, int]:
    """(base, n): a square image of side `base * 2**n`, halved while even and above 7 (64, 32 -> 4; 28 -> 7)."""
    _, height, width = image_shape
    if height != width:
        raise ValueError(f"image_shape={tuple(image_shape)} is invalid: DCGAN needs square images")
    base, depth = height, 0
    while base % 2 == 0 and base > 7:
        base, depth = base // 2, depth + 1
    if depth == 0:
        raise ValueError(f"image_shape={tuple(image_shape)} is invalid: DCGAN needs an even side of at least 8")
    return base, depth


class DCGenerator(nn.Module):
    """z (B, latent_dim) -> logits (B, C, H, W): a transposed conv to base x base, then doubling transposed convs
    with batch norm and ReLU, halving the channels from `width * 2**(n-1)` (Radford et al., 2015)."""

    def __init__(self, latent_dim: int, image_shape: Sequence[int], width: int = 64,
                 attention_resolutions: Sequence[int] = ()) -> None:
        super().__init__()
        base, depth = dcgan_depth(image_shape)
        sides = [base * 2**k for k in range(depth)]  # the feature maps' sides, before the last transposed conv
        check_attention_resolutions(attention_resolutions, [s for s in sides if s % 2 == 0])
        channels = width * 2 ** (depth - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, channels, base, bias=False),
                                   nn.BatchNorm2d(channels), nn.ReLU(), *attention_at(base, channels,
                                                                                      attention_resolutions)]
        for side in sides[1:]:
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(channels // 2), nn.ReLU(), *attention_at(side, channels // 2,
                                                                               attention_resolutions)]
            channels //= 2
        self.net = nn.Sequential(*layers, nn.ConvTranspose2d(channels, image_shape[0], 4, 2, 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])  # (B, latent_dim) -> (B, latent_dim, 1, 1)


class DCDiscriminator(nn.Sequential):
    """Images (B, C, H, W) -> logits (B, 1): strided convs with LeakyReLU(0.2), mirroring `DCGenerator`.

    `norm`: "batch" as in the paper (none on the first layer), or "layer" for WGAN-GP, whose per-sample gradient
    penalty is invalid with batch norm (Gulrajani et al., 2017, section 4).
    """

    def __init__(self, image_shape: Sequence[int], width: int = 64, norm: str = "batch",
                 attention_resolutions: Sequence[int] = ()) -> None:
        if norm not in ("batch", "layer"):
            raise ValueError(f"norm={norm!r} is unknown; choose 'batch' or 'layer'")
        base, depth = dcgan_depth(image_shape)
        sides = [base * 2**k for k in range(depth)][::-1]  # the feature maps' sides after each strided conv
        check_attention_resolutions(attention_resolutions, [s for s in sides if s % 2 == 0])
        layers: list[nn.Module] = [nn.Conv2d(image_shape[0], width, 4, 2, 1), nn.LeakyReLU(0.2),
                                   *attention_at(sides[0], width, attention_resolutions)]
        channels = width
        for side in sides[1:]:
            norm_layer = nn.BatchNorm2d(2 * channels) if norm == "batch" else nn.GroupNorm(1, 2 * channels)
            layers += [nn.Conv2d(channels, 2 * channels, 4, 2, 1, bias=False), norm_layer, nn.LeakyReLU(0.2),
                       *attention_at(side, 2 * channels, attention_resolutions)]
            channels *= 2
        super().__init__(*layers, nn.Conv2d(channels, 1, base), nn.Flatten())
