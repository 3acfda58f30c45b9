"""Plain `nn.Module` building blocks. Nothing here knows about Lightning, losses or latents."""

from collections.abc import Sequence
from math import prod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import attention_at, check_attention_resolutions
from .checks import check_images

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


def check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    """Raise a ValueError naming `value` and the `allowed` ones when a string setting is not one of them."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is unknown; choose one of {tuple(allowed)}")


def check_batch_shape(model: object, x: Tensor) -> None:
    """Raise a ValueError when a batch x (B, C, H, W) is not of the `image_shape` the model was built for, or is not
    finite float images in [0, 1] (`check_images`)."""
    if tuple(x.shape[1:]) != tuple(model.image_shape):
        raise ValueError(f"{type(model).__name__} was built for images of shape {tuple(model.image_shape)} "
                         f"but got a batch of shape {tuple(x.shape)}; set image_shape to match the data")
    check_images(x, where=f"{type(model).__name__} input")


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


def even_sizes(sizes: Sequence[tuple[int, int]]) -> list[int]:
    """Heights of the feature maps among `sizes` with H and W even: where a self-attention block may go."""
    return [h for h, w in sizes if h % 2 == 0 == w % 2]


def norm_activation(channels: int, batch_norm: bool, activation: str) -> list[nn.Module]:
    """[BatchNorm2d, activation], or the activation alone without batch norm."""
    return [*([nn.BatchNorm2d(channels)] if batch_norm else []), make_activation(activation)]


def _conv_block(conv: nn.Module, channels: int, batch_norm: bool, activation: str) -> list[nn.Module]:
    return [conv, *norm_activation(channels, batch_norm, activation)]


def upsampling_conv(in_channels: int, out_channels: int, size_in: tuple[int, int],
                    size_out: tuple[int, int]) -> nn.ConvTranspose2d:
    """Stride-2 transposed conv 3x3 from `size_in` to exactly `size_out` (H, W): its `output_padding` (0 or 1)
    undoes the rounding up of a stride-2 conv (`conv_sizes`)."""
    padding = (size_out[0] - (2 * size_in[0] - 1), size_out[1] - (2 * size_in[1] - 1))
    return nn.ConvTranspose2d(in_channels, out_channels, 3, 2, 1, output_padding=padding)


class ConvEncoder(nn.Module):
    """Images (B, C, H, W) -> features (B, out_features) through one stride-2 conv per entry of `widths`.

    Kernel 3 / padding 1 halves H and W rounding up, so any image size works (28x20 Frey faces included).
    """

    def __init__(self, image_shape: Sequence[int], out_features: int, widths: Sequence[int] = (32, 64, 128),
                 batch_norm: bool = False, activation: str = "leaky_relu",
                 attention_resolutions: Sequence[int] = ()) -> None:
        super().__init__()
        channels, height, width = image_shape
        sizes = conv_sizes(height, width, len(widths))
        check_attention_resolutions(attention_resolutions, even_sizes(sizes[1:]))
        layers: list[nn.Module] = []
        for out_channels, (h, _) in zip(widths, sizes[1:]):
            layers += self.stage(channels, out_channels, batch_norm, activation)
            layers += attention_at(h, out_channels, attention_resolutions)  # SAGAN block after this resolution
            channels = out_channels
        h, w = sizes[-1]
        self.net = nn.Sequential(*layers, *self.head(channels, batch_norm, activation), nn.Flatten(),
                                 nn.Linear(widths[-1] * h * w, out_features))

    def stage(self, in_channels: int, out_channels: int, batch_norm: bool, activation: str) -> list[nn.Module]:
        """The layers of one resolution: a stride-2 conv, [batch norm], activation."""
        conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        return _conv_block(conv, out_channels, batch_norm, activation)

    def head(self, channels: int, batch_norm: bool, activation: str) -> list[nn.Module]:
        """Layers between the last stage and the flattening linear layer: none."""
        return []

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """Latents (B, in_features) -> logits (B, C, H, W); mirrors `ConvEncoder` built with the same `widths`.

    `output_padding` of each transposed conv picks the exact size the encoder had at that depth.
    """

    def __init__(self, in_features: int, image_shape: Sequence[int], widths: Sequence[int] = (32, 64, 128),
                 batch_norm: bool = False, activation: str = "leaky_relu",
                 attention_resolutions: Sequence[int] = ()) -> None:
        super().__init__()
        channels, height, width = image_shape
        sizes = conv_sizes(height, width, len(widths))  # sizes[i] is the input size of encoder layer i
        check_attention_resolutions(attention_resolutions, even_sizes(sizes[1:-1]))
        h, w = sizes[-1]
        layers: list[nn.Module] = [nn.Linear(in_features, widths[-1] * h * w), nn.Unflatten(1, (widths[-1], h, w))]
        reversed_widths = list(widths[::-1]) + [channels]
        for i in range(len(widths)):
            last = i == len(widths) - 1
            layers += self.stage(reversed_widths[i], reversed_widths[i + 1], sizes[-1 - i], sizes[-2 - i], last,
                                 batch_norm, activation)
            if not last:
                layers += attention_at(sizes[-2 - i][0], reversed_widths[i + 1], attention_resolutions)
        self.net = nn.Sequential(*layers)

    def stage(self, in_channels: int, out_channels: int, size_in: tuple[int, int], size_out: tuple[int, int],
              last: bool, batch_norm: bool, activation: str) -> list[nn.Module]:
        """The layers of one resolution: a stride-2 transposed conv to `size_out`, then [batch norm] and activation
        unless it is the `last`, which outputs the logits."""
        conv = upsampling_conv(in_channels, out_channels, size_in, size_out)
        return [conv] if last else _conv_block(conv, out_channels, batch_norm, activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class MLPEncoder(nn.Sequential):
    """Images (B, C, H, W) -> features (B, out_features) through a flattening `MLP`.

    With `cond_features` > 0, `forward(x, c)` concatenates a condition c (B, cond_features) to the flat image
    (Sohn et al., 2015); with 0 it is exactly the unconditional encoder (same parameters, same outputs).
    """

    def __init__(self, image_shape: Sequence[int], out_features: int, hidden: Sequence[int],
                 activation: str = "relu", cond_features: int = 0) -> None:
        super().__init__(nn.Flatten(), MLP(prod(image_shape) + cond_features, out_features, hidden, activation))

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        h = self[0](x)
        return self[1](h if c is None else torch.cat([h, c.to(h.dtype)], dim=-1))


class MLPDecoder(nn.Sequential):
    """Latents (B, in_features) -> logits (B, C, H, W) through an `MLP`; `forward(z, c)` concatenates c to z."""

    def __init__(self, in_features: int, image_shape: Sequence[int], hidden: Sequence[int],
                 activation: str = "relu", cond_features: int = 0) -> None:
        super().__init__(MLP(in_features + cond_features, prod(image_shape), hidden, activation),
                         nn.Unflatten(1, tuple(image_shape)))

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        return self[1](self[0](z if c is None else torch.cat([z, c.to(z.dtype)], dim=-1)))


class NullEncoder(nn.Module):
    """Encodes every image as an empty code (B, 0): for models whose decoder sees only the condition."""

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return x.new_zeros(len(x), 0)


# --- conditions: `forward(x, y) -> c` (B, features); x is None when decoding or sampling ---
class LabelCondition(nn.Module):
    """c = one-hot(y) for integer class labels y (B,)."""

    kind = "label"  # what y must hold when decoding: integer labels

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = self.num_classes = num_classes

    def forward(self, x: Tensor | None, y: Tensor | None) -> Tensor:
        if y is None:
            raise ValueError("this model is conditioned on class labels: pass y (integer labels, shape (B,) or (1,))")
        y = y.long().reshape(-1)
        low, high = (int(v) for v in torch.aminmax(y)) if len(y) else (0, 0)
        if low < 0 or high >= self.num_classes:
            raise ValueError(f"labels must be in 0..{self.num_classes - 1} (num_classes={self.num_classes}), got "
                             f"labels from {low} to {high}; set the datamodule's num_classes to match its labels")
        return F.one_hot(y, self.num_classes).float()


class QuarterCondition(nn.Module):
    """c = the lower-left quarter of the image, flattened (structured output prediction, Sohn et al., 2015).

    Read from x when there is one (training, encoding); otherwise from y, which then holds full-size images
    (B, C, H, W) of which only that quarter is used.
    """

    kind = "image"  # what y must hold when decoding: full-size images

    def __init__(self, image_shape: Sequence[int]) -> None:
        super().__init__()
        channels, height, width = image_shape
        if height < 2 or width < 2:
            raise ValueError(f"condition='quarter' needs images at least 2x2 to have a quarter; got image_shape="
                             f"{tuple(image_shape)}")
        self.rows, self.cols = slice(height // 2, height), slice(0, width // 2)
        self.features = channels * (height - height // 2) * (width // 2)

    def mask(self, image_shape: Sequence[int]) -> Tensor:
        """1 inside the conditioning region, (C, H, W): the part of x that is given, so not scored."""
        mask = torch.zeros(tuple(image_shape))
        mask[:, self.rows, self.cols] = 1.0
        return mask

    def forward(self, x: Tensor | None, y: Tensor | None) -> Tensor:
        images = x if x is not None else y
        if images is None or images.ndim != 4:
            raise ValueError("this model is conditioned on the lower-left quarter of an image: pass y = images "
                             "(B, C, H, W) when decoding or sampling")
        return images[:, :, self.rows, self.cols].flatten(1).float()


class GaussianNoise(nn.Module):
    """Corruption for denoising autoencoders (Vincent et al., 2008): x + std * eps, clipped to [0, 1]."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(x.shape, generator=generator).to(x.device)  # CPU noise: same corruption on any device
        return (x + self.std * noise).clamp(0.0, 1.0)


class PoolingConvEncoder(nn.Sequential):
    """Images (B, C, H, W) -> flat feature maps (B, out_features): conv 3x3, batch norm, LeakyReLU, 2x2 max-pool
    per entry of `widths`. Pooling rounds up (`ceil_mode`), matching `conv_sizes`, so any image size works."""

    def __init__(self, image_shape: Sequence[int], widths: Sequence[int] = (8, 16, 32)) -> None:
        channels, height, width = image_shape
        layers: list[nn.Module] = []
        for out_channels in widths:
            layers += [*_conv_block(nn.Conv2d(channels, out_channels, 3, padding=1), out_channels, True, "leaky_relu"),
                       nn.MaxPool2d(2, ceil_mode=True)]
            channels = out_channels
        h, w = conv_sizes(height, width, len(widths))[-1]
        self.out_features = widths[-1] * h * w
        super().__init__(*layers, nn.Flatten())


class PoolingConvDecoder(nn.Sequential):
    """Flat feature maps from `PoolingConvEncoder` -> logits (B, C, H, W): one stride-2 transposed conv per width,
    batch norm and LeakyReLU between them, none after the last (the loop applies the sigmoid)."""

    def __init__(self, image_shape: Sequence[int], widths: Sequence[int] = (8, 16, 32)) -> None:
        channels, height, width = image_shape
        sizes = conv_sizes(height, width, len(widths))
        layers: list[nn.Module] = [nn.Unflatten(1, (widths[-1], *sizes[-1]))]
        targets = list(widths[::-1][1:]) + [channels]
        in_channels = widths[-1]
        for i, out_channels in enumerate(targets):
            conv = upsampling_conv(in_channels, out_channels, sizes[-1 - i], sizes[-2 - i])  # the encoder's size there
            layers += [conv] if i == len(targets) - 1 else _conv_block(conv, out_channels, True, "leaky_relu")
            in_channels = out_channels
        super().__init__(*layers)
