"""Plain `nn.Module` building blocks. Nothing here knows about Lightning, losses or latents."""

from collections.abc import Sequence
from math import prod

from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "silu": nn.SiLU, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is unknown; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def check_positive(**values: int | Sequence[int]) -> None:
    """Raise a ValueError naming the first size that is not a positive integer (or an empty/non-positive list)."""
    for name, value in values.items():
        items = list(value) if isinstance(value, Sequence) else [value]
        if not items or any(not isinstance(v, int) or v < 1 for v in items):
            raise ValueError(f"{name}={value!r} is invalid; it must be a positive integer or a non-empty list of them")


class MLP(nn.Sequential):
    """Fully connected net (B, in_features) -> (B, out_features); `hidden` widths, activation between layers."""

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int], activation: str = "relu") -> None:
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_features, width), make_activation(activation)]
            in_features = width
        super().__init__(*layers, nn.Linear(in_features, out_features))


def conv_sizes(height: int, width: int, depth: int) -> list[tuple[int, int]]:
    """Feature-map sizes after each of `depth` stride-2 convs (kernel 3, padding 1): ceil-halving, any H and W."""
    sizes = [(height, width)]
    for _ in range(depth):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def _conv_block(conv: nn.Module, channels: int, batch_norm: bool, activation: str) -> list[nn.Module]:
    return [conv, *([nn.BatchNorm2d(channels)] if batch_norm else []), make_activation(activation)]


class ConvEncoder(nn.Module):
    """Images (B, C, H, W) -> features (B, out_features) through one stride-2 conv per entry of `widths`.

    Kernel 3 / padding 1 halves H and W rounding up, so any image size works (28x20 Frey faces included).
    """

    def __init__(self, image_shape: Sequence[int], out_features: int, widths: Sequence[int] = (32, 64, 128),
                 batch_norm: bool = False, activation: str = "leaky_relu") -> None:
        super().__init__()
        channels, height, width = image_shape
        layers: list[nn.Module] = []
        for out_channels in widths:
            conv = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
            layers += _conv_block(conv, out_channels, batch_norm, activation)
            channels = out_channels
        h, w = conv_sizes(height, width, len(widths))[-1]
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(widths[-1] * h * w, out_features))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """Latents (B, in_features) -> logits (B, C, H, W); mirrors `ConvEncoder` built with the same `widths`.

    `output_padding` of each transposed conv picks the exact size the encoder had at that depth.
    """

    def __init__(self, in_features: int, image_shape: Sequence[int], widths: Sequence[int] = (32, 64, 128),
                 batch_norm: bool = False, activation: str = "leaky_relu") -> None:
        super().__init__()
        channels, height, width = image_shape
        sizes = conv_sizes(height, width, len(widths))  # sizes[i] is the input size of encoder layer i
        h, w = sizes[-1]
        layers: list[nn.Module] = [nn.Linear(in_features, widths[-1] * h * w), nn.Unflatten(1, (widths[-1], h, w))]
        reversed_widths = list(widths[::-1]) + [channels]
        for i in range(len(widths)):
            (h_out, w_out), (h_in, w_in) = sizes[-2 - i], sizes[-1 - i]
            padding = (h_out - (2 * h_in - 1), w_out - (2 * w_in - 1))  # 0 or 1: undoes the ceil of the encoder
            conv = nn.ConvTranspose2d(reversed_widths[i], reversed_widths[i + 1], 3, 2, 1, output_padding=padding)
            last = i == len(widths) - 1
            layers += [conv] if last else _conv_block(conv, reversed_widths[i + 1], batch_norm, activation)
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class MLPEncoder(nn.Sequential):
    """Images (B, C, H, W) -> features (B, out_features) through a flattening `MLP`."""

    def __init__(self, image_shape: Sequence[int], out_features: int, hidden: Sequence[int],
                 activation: str = "relu") -> None:
        super().__init__(nn.Flatten(), MLP(prod(image_shape), out_features, hidden, activation))


class MLPDecoder(nn.Sequential):
    """Latents (B, in_features) -> logits (B, C, H, W) through an `MLP`."""

    def __init__(self, in_features: int, image_shape: Sequence[int], hidden: Sequence[int],
                 activation: str = "relu") -> None:
        super().__init__(MLP(in_features, prod(image_shape), hidden, activation), nn.Unflatten(1, tuple(image_shape)))
