"""ResNet encoder and decoder: `ConvEncoder` / `ConvDecoder` with a pre-activation residual block (He et al., 2016)
at every resolution. Same arguments and sizes as the plain conv networks, so a preset swaps one for the other with
a setting (`architecture="resnet"`).
"""

from torch import Tensor, nn

from .blocks import ConvDecoder, ConvEncoder, norm_activation, upsampling_conv


class ResidualBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))), convs 3x3 keeping (C, H, W): the pre-activation residual block of
    He et al. (2016); without batch norm the branch is `net` = [act, conv, act, conv]."""

    def __init__(self, channels: int, batch_norm: bool = False, activation: str = "relu") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(2):
            layers += [*norm_activation(channels, batch_norm, activation), nn.Conv2d(channels, channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class ResNetEncoder(ConvEncoder):
    """`ConvEncoder` whose every stride-2 conv is followed by a `ResidualBlock`, and whose last feature map goes
    through [batch norm] and the activation before the linear layer (the blocks leave it un-normalised)."""

    def stage(self, in_channels: int, out_channels: int, batch_norm: bool, activation: str) -> list[nn.Module]:
        return [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1),
                ResidualBlock(out_channels, batch_norm, activation)]

    def head(self, channels: int, batch_norm: bool, activation: str) -> list[nn.Module]:
        return norm_activation(channels, batch_norm, activation)


class ResNetDecoder(ConvDecoder):
    """`ConvDecoder` mirroring `ResNetEncoder`: at each resolution a `ResidualBlock`, [batch norm] and activation,
    then the stride-2 transposed conv to the encoder's size at that depth (the last one outputs the logits)."""

    def stage(self, in_channels: int, out_channels: int, size_in: tuple[int, int], size_out: tuple[int, int],
              last: bool, batch_norm: bool, activation: str) -> list[nn.Module]:
        return [ResidualBlock(in_channels, batch_norm, activation),
                *norm_activation(in_channels, batch_norm, activation),
                upsampling_conv(in_channels, out_channels, size_in, size_out)]
