"""RealNVP (Dinh et al., 2017): affine coupling layers with checkerboard and channel masks, squeezing and a
multi-scale architecture; as an image flow trained by exact likelihood, and as a learned prior over VAE latents.

Contract of the plain modules: `forward(x) -> (z, log_det)` maps data to noise with log_det (B,) the
log |det dz/dx|, and `inverse(z) -> x` undoes it. Every coupling net ends in a zero-initialised layer, so each
flow is exactly the identity at initialisation (a VAE with a `RealNVPPrior` starts as the plain VAE).
"""

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .blocks import MLP, check_batch_shape, check_positive
from .losses import standard_normal_log_prob
from .resnet import ResidualBlock
from .module import GenerativeModule, adam

Batch = tuple[Tensor, Tensor]


def checkerboard_mask(shape: Sequence[int], parity: int) -> Tensor:
    """(C, H, W) mask, 1 where (h + w + parity) is even: the pixels a checkerboard coupling passes through."""
    channels, height, width = shape
    rows, cols = torch.arange(height)[:, None], torch.arange(width)[None, :]
    return ((rows + cols + parity) % 2 == 0).float().expand(channels, height, width).clone()


def channel_mask(shape: Sequence[int], parity: int) -> Tensor:
    """(C, H, W) mask, 1 on the first half of the channels (the second half when parity is 1)."""
    channels, height, width = shape
    first = (torch.arange(channels) < channels // 2).float()
    return (first if parity == 0 else 1.0 - first)[:, None, None].expand(channels, height, width).clone()


def zero_last(net: nn.Module, last: nn.Module) -> nn.Module:
    """`net` with the weight and bias of its output layer `last` zeroed: the coupling starts as the identity."""
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return net


class MaskedAffineCoupling(nn.Module):
    """z = b * x + (1 - b) * (x * exp(s) + t), with (s, t) computed from b * x (Dinh et al., 2017, eqs. 7-9).

    `mask` b (any shape without the batch; 1 = passed through) broadcasts over the batch; `net` maps b * x to
    2 * features along dim 1 (raw scale, then shift). s = scale * tanh(raw scale) with a learned per-feature `scale`
    (the paper's rescaled tanh) keeps exp(s) bounded; log|det dz/dx| = sum of s over the free positions.
    """

    def __init__(self, mask: Tensor, net: nn.Module) -> None:
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.net = net
        self.scale = nn.Parameter(torch.ones(mask.shape[0], *[1] * (mask.dim() - 1)))

    def _scale_shift(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        raw_scale, shift = self.net(kept).chunk(2, dim=1)
        free = 1.0 - self.mask  # the transform and its log-det in x's precision even if the net ran in bf16:
        return self.scale * torch.tanh(raw_scale.to(kept.dtype)) * free, shift.to(kept.dtype) * free

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._scale_shift(x * self.mask)
        return x * log_scale.exp() + shift, log_scale.flatten(1).sum(dim=1)

    def inverse(self, z: Tensor) -> Tensor:
        log_scale, shift = self._scale_shift(z * self.mask)  # the kept positions of z are those of x
        return (z - shift) * torch.exp(-log_scale)


def coupling_resnet(channels: int, hidden: int, num_blocks: int) -> nn.Module:
    """Conv ResNet (B, C, H, W) -> (B, 2C, H, W) computing a coupling's (raw scale, shift); zero output layer."""
    last = nn.Conv2d(hidden, 2 * channels, 3, padding=1)
    blocks = [ResidualBlock(hidden) for _ in range(num_blocks)]
    return zero_last(nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), *blocks, nn.ReLU(), last), last)


def image_coupling(shape: Sequence[int], kind: str, parity: int, hidden: int, num_blocks: int) -> MaskedAffineCoupling:
    """A coupling on images of `shape` (C, H, W) with a "checkerboard" or "channel" mask."""
    mask = (checkerboard_mask if kind == "checkerboard" else channel_mask)(shape, parity)
    return MaskedAffineCoupling(mask, coupling_resnet(shape[0], hidden, num_blocks))


class Squeeze(nn.Module):
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 patch becomes 4 channels (volume preserving, log_det 0)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return nn.functional.pixel_unshuffle(x, 2), x.new_zeros(len(x))

    def inverse(self, z: Tensor) -> Tensor:
        return nn.functional.pixel_shuffle(z, 2)


class FlowSequence(nn.ModuleList):
    """Invertible layers applied in order: log-dets add up, `inverse` runs the layers backwards."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_det = x.new_zeros(len(x))
        for layer in self:
            x, layer_log_det = layer(x)
            log_det = log_det + layer_log_det
        return x, log_det

    def inverse(self, z: Tensor) -> Tensor:
        for layer in reversed(self):
            z = layer.inverse(z)
        return z


class MultiScaleFlow(nn.Module):
    """Images (B, C, H, W) <-> noise (B, C*H*W): the multi-scale RealNVP (Dinh et al., 2017, sec. 3.6).

    Each of the first `num_scales - 1` scales: 3 checkerboard couplings, a squeeze, 3 channel couplings, then half
    of the channels are factored out (they are final latents); the last scale: 4 checkerboard couplings. Masks
    alternate parity. H and W must be divisible by 2^(num_scales - 1).
    """

    def __init__(self, image_shape: Sequence[int], num_scales: int = 2, hidden: int = 64, num_blocks: int = 4) -> None:
        super().__init__()
        check_positive(num_scales=num_scales, hidden=hidden, num_blocks=num_blocks)
        channels, height, width = image_shape
        if height % 2 ** (num_scales - 1) or width % 2 ** (num_scales - 1):
            raise ValueError(f"image size {height}x{width} must be divisible by 2^(num_scales - 1) = "
                             f"{2 ** (num_scales - 1)} for num_scales={num_scales}; use fewer scales")
        self.image_shape = tuple(image_shape)
        self.scales, self.factored_shapes = nn.ModuleList(), []
        shape = (channels, height, width)
        for _ in range(num_scales - 1):
            layers = [image_coupling(shape, "checkerboard", i % 2, hidden, num_blocks) for i in range(3)]
            shape = (4 * shape[0], shape[1] // 2, shape[2] // 2)
            layers += [Squeeze(), *[image_coupling(shape, "channel", i % 2, hidden, num_blocks) for i in range(3)]]
            self.scales.append(FlowSequence(layers))
            shape = (shape[0] // 2, shape[1], shape[2])
            self.factored_shapes.append(shape)  # the half factored out has the shape of the half that goes on
        self.scales.append(FlowSequence([image_coupling(shape, "checkerboard", i % 2, hidden, num_blocks)
                                         for i in range(4)]))
        self.final_shape = shape

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        latents, log_det = [], x.new_zeros(len(x))
        for scale in self.scales[:-1]:
            x, scale_log_det = scale(x)
            factored, x = x.chunk(2, dim=1)
            latents.append(factored.flatten(1))
            log_det = log_det + scale_log_det
        x, scale_log_det = self.scales[-1](x)
        return torch.cat([*latents, x.flatten(1)], dim=1), log_det + scale_log_det

    def inverse(self, z: Tensor) -> Tensor:
        sizes = [math.prod(shape) for shape in (*self.factored_shapes, self.final_shape)]
        *factored, final = z.split(sizes, dim=1)
        x = self.scales[-1].inverse(final.reshape(len(z), *self.final_shape))
        for scale, part, shape in reversed(list(zip(self.scales[:-1], factored, self.factored_shapes))):
            x = scale.inverse(torch.cat([part.reshape(len(z), *shape), x], dim=1))
        return x


class RealNVPPrior(nn.Module):
    """A learned density over latent vectors: N(0, I) pushed through `num_layers` masked affine couplings with
    alternating even/odd masks and MLP coupling nets (`hidden` wide, two layers). The identity at initialisation.

    `log_prob(z)` = log N(u; 0, I) + log|det du/dz| with u = forward(z); `sample(n, generator, temperature)` draws
    u ~ N(0, temperature^2 I) on the CPU and returns inverse(u) on the prior's device. A `LatentPrior`
    (genlab.models.protocols): `GaussianBottleneck(latent_dim, prior=RealNVPPrior(latent_dim))` is a VAE with it.
    """

    def __init__(self, latent_dim: int, num_layers: int = 4, hidden: int = 64) -> None:
        super().__init__()
        check_positive(latent_dim=latent_dim, num_layers=num_layers, hidden=hidden)
        if latent_dim < 2:
            raise ValueError(f"latent_dim={latent_dim}: a coupling prior needs latent_dim >= 2 (one half conditions "
                             f"the other)")
        self.latent_dim = latent_dim
        even = (torch.arange(latent_dim) % 2 == 0).float()
        layers = []
        for i in range(num_layers):
            net = MLP(latent_dim, 2 * latent_dim, [hidden, hidden])
            layers.append(MaskedAffineCoupling(even if i % 2 == 0 else 1.0 - even, zero_last(net, net[-1])))
        self.flow = FlowSequence(layers)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.flow(z)

    def inverse(self, u: Tensor) -> Tensor:
        return self.flow.inverse(u)

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) summed over the last dimension: z (..., latent_dim) -> (...), e.g. (k, B, L) -> (k, B)."""
        flat = z.reshape(-1, self.latent_dim).to(torch.promote_types(z.dtype, torch.float32))  # bf16 -> float32
        u, log_det = self.flow(flat)
        return (standard_normal_log_prob(u) + log_det).reshape(z.shape[:-1])

    def sample(self, num_samples: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        u = temperature * torch.randn(num_samples, self.latent_dim, generator=generator)
        return self.flow.inverse(u.to(self.flow[0].mask.device))


class RealNVP(GenerativeModule):
    """RealNVP image flow trained by exact likelihood on dequantised 8-bit data (Dinh et al., 2017).

    Images x = n / 255 are dequantised to x' = (n + u) / 256, u ~ U[0, 1), then mapped to logit space
    l = logit(alpha + (1 - 2 alpha) x') (the paper's sec. 4.1 transform, made symmetric so both ends stay off 0 and
    1), then through `MultiScaleFlow` to z ~ N(0, I). `log_likelihood(x')` is the density of x' on [0, 1)^D,
    Jacobians of the logit and the flow included; `loss(x)` returns `nll` = -log p(x') + D log 256, nats per image,
    an upper bound on -log P(n) of the 8-bit data (Theis et al., 2016), and `bpd` = nll / (D log 2). `loss` = nll.

    Args:
        image_shape: (C, H, W) of the data; the CLI links it from the datamodule.
        num_scales: scales of the multi-scale architecture; H and W must be divisible by 2^(num_scales - 1).
        hidden: channels of the coupling ResNets.
        num_blocks: residual blocks per coupling ResNet.
        alpha: margin of the logit transform, in (0, 0.5): data are squeezed into [alpha, 1 - alpha] before logit.
        lr: Adam learning rate.
        weight_decay: L2 penalty on the weights (Adam's weight_decay; the paper used 5e-5).
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), num_scales: int = 2, hidden: int = 64,
                 num_blocks: int = 4, alpha: float = 0.05, lr: float = 1e-3, weight_decay: float = 5e-5) -> None:
        super().__init__()
        if not 0 < alpha < 0.5 or lr <= 0 or weight_decay < 0:
            raise ValueError(f"alpha={alpha} must be in (0, 0.5), lr={lr} > 0 and weight_decay={weight_decay} >= 0")
        self.save_hyperparameters()
        self.image_shape, self.alpha, self.lr, self.weight_decay = tuple(image_shape), alpha, lr, weight_decay
        self.flow = MultiScaleFlow(self.image_shape, num_scales, hidden, num_blocks)
        self.latent_dim = math.prod(self.image_shape)  # z has the data's dimension: the flow is a bijection

    likelihood_support = "continuous"  # a density on [0, 1)^D: `genlab test` dequantises 8-bit data for it
    likelihood_description = "RealNVP: exact density of dequantised images on [0, 1)^D (logit, then the flow)"

    def to_logit(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(logit(alpha + (1 - 2 alpha) x), log|det dl/dx|) per image, for x in [0, 1]."""
        y = self.alpha + (1 - 2 * self.alpha) * x
        log_det = (math.log(1 - 2 * self.alpha) - torch.log(y) - torch.log1p(-y)).flatten(1).sum(dim=1)
        return torch.log(y) - torch.log1p(-y), log_det

    def from_logit(self, logits: Tensor) -> Tensor:
        return ((torch.sigmoid(logits) - self.alpha) / (1 - 2 * self.alpha)).clamp(0.0, 1.0)

    def log_likelihood(self, x: Tensor) -> Tensor:
        """log p(x) (B,) in nats for continuous x in [0, 1]^D (e.g. dequantised images): the exact flow density."""
        check_batch_shape(self, x)
        logits, logit_log_det = self.to_logit(x)
        z, flow_log_det = self.flow(logits)
        return standard_normal_log_prob(z) + flow_log_det + logit_log_det

    def loss(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """{"loss", "nll", "bpd"}: -log P(n) bound in nats per image (batch mean) and in bits per dimension."""
        check_batch_shape(self, x)
        noise = torch.rand(x.shape).to(x.device)  # u ~ U[0, 1) on the CPU, as genlab.metrics.likelihood.dequantize
        dequantized = (torch.round(x * 255) + noise) / 256
        # -log p(x') of the density on [0, 1)^D, plus D log 256 for the Jacobian 256^-D of (n + u) -> (n + u) / 256
        nll = self.latent_dim * math.log(256) - self.log_likelihood(dequantized).mean()
        return {"loss": nll, "nll": nll, "bpd": nll / (self.latent_dim * math.log(2))}

    @torch.no_grad()
    def sample(self, num_samples: int, y: Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        """Images in [0, 1] from z ~ N(0, temperature^2 I), drawn on the CPU from `generator`."""
        z = temperature * torch.randn(num_samples, self.latent_dim, generator=generator)
        return self.from_logit(self.flow.inverse(z.to(self.device)))

    # --- Lightning ---
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
