"""The networks of `HierarchicalVAE` (genlab.models.hierarchical), plain `nn.Module`s: the residual cells, a
top-down `LatentGroup` (prior, posterior, code into the state) and the `LadderNetwork` that runs the bottom-up and
top-down passes, plus the diagonal-Gaussian densities they use. Gaussians are (mean, std) pairs of
(B, latent_channels, h, w) tensors, in float32.
"""

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import conv_sizes

__all__ = ["STD_OFFSET", "Gaussian", "Draw", "gaussian_from", "gaussian_log_prob", "gaussian_kl_between", "Residual",
           "LatentGroup", "LadderNetwork"]

Gaussian = tuple[Tensor, Tensor]  # (mean, std), (B, latent_channels, h, w) each
# draw(group index, posterior or None, prior) -> z: how the top-down pass picks each group's code
Draw = Callable[[int, Gaussian | None, Gaussian], Tensor]
STD_OFFSET = math.log(math.e - 1)  # softplus(0 + STD_OFFSET) = 1: a zero network output means std 1


def gaussian_from(params: Tensor) -> Gaussian:
    """(mean, std) of a network output (B, 2 latent_channels, h, w), in float32; a zero output means N(0, 1)."""
    mean, raw = params.float().chunk(2, dim=1)
    return mean, F.softplus(raw + STD_OFFSET).clamp_min(1e-5)


def gaussian_log_prob(z: Tensor, dist: Gaussian) -> Tensor:
    """log N(z; mean, std^2) of each image, summed over every dimension but the batch: (B, ...) -> (B,)."""
    mean, std = dist
    return (-0.5 * ((z - mean) / std).pow(2) - std.log() - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


def gaussian_kl_between(q: Gaussian, p: Gaussian) -> Tensor:
    """KL(q || p) of diagonal Gaussians, summed per image: (B,)."""
    (qm, qs), (pm, ps) = q, p
    return (torch.log(ps / qs) + (qs.pow(2) + (qm - pm).pow(2)) / (2 * ps.pow(2)) - 0.5).flatten(1).sum(1)


def _cell(c_in: int, c_mid: int, c_out: int, last_scale: float = 1.0) -> nn.Sequential:
    """VDVAE's bottleneck block, GELU before each conv: 1x1, 3x3, 3x3, 1x1; the last conv's init scaled."""
    convs = [nn.Conv2d(c_in, c_mid, 1), nn.Conv2d(c_mid, c_mid, 3, padding=1),
             nn.Conv2d(c_mid, c_mid, 3, padding=1), nn.Conv2d(c_mid, c_out, 1)]
    with torch.no_grad():
        convs[-1].weight.mul_(last_scale)
        convs[-1].bias.mul_(last_scale)
    return nn.Sequential(*(layer for conv in convs for layer in (nn.GELU(), conv)))


class Residual(nn.Module):
    """x + cell(x), the residual stream of both passes; `scale` shrinks the cell's initial output (VDVAE:
    1 / sqrt(number of cells)) so that a deep stack starts near the identity."""

    def __init__(self, width: int, scale: float) -> None:
        super().__init__()
        self.body = _cell(width, max(width // 4, 1), width, scale)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class LatentGroup(nn.Module):
    """One top-down block: prior p(z | h) (N(0, I) for the top group), posterior q(z | h, features), z into h."""

    def __init__(self, width: int, latent_channels: int, top: bool, scale: float) -> None:
        super().__init__()
        mid = max(width // 4, 1)
        self.latent_channels = latent_channels
        self.posterior = _cell(2 * width, mid, 2 * latent_channels)
        # prior mean/std and a feature added to h; zero at init: p = N(0, I), h unchanged (VDVAE's zero_last)
        self.prior = None if top else _cell(width, mid, 2 * latent_channels + width, last_scale=0.0)
        self.project = nn.Conv2d(latent_channels, width, 1)
        with torch.no_grad():
            self.project.weight.mul_(scale)
        self.cell = Residual(width, scale)

    def forward(self, h: Tensor, features: Tensor | None, draw: Callable[[Gaussian | None, Gaussian], Tensor]
                ) -> tuple[Tensor, Tensor, Gaussian | None, Gaussian]:
        """(new h, z, q or None without features, p)."""
        q = None if features is None else gaussian_from(self.posterior(torch.cat([h, features], dim=1)))
        if self.prior is None:
            shape = (len(h), self.latent_channels, *h.shape[2:])
            p = (h.new_zeros(shape, dtype=torch.float32), h.new_ones(shape, dtype=torch.float32))
        else:
            out = self.prior(h)
            p, h = gaussian_from(out[:, :2 * self.latent_channels]), h + out[:, 2 * self.latent_channels:]
        z = draw(q, p)
        return self.cell(h + self.project(z.to(h.dtype))), z, q, p


class LadderNetwork(nn.Module):
    """Bottom-up encoder, top-down latent groups at `resolutions` (heights, coarsest first) and an output conv."""

    def __init__(self, image_shape: Sequence[int], out_channels: int, resolutions: Sequence[int],
                 latent_channels: int, width: int, cells: int) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        sizes = conv_sizes(height, width_px, max(height.bit_length(), 1))
        heights = [h for h, _ in sizes]
        bad = [r for r in resolutions if r not in heights]
        if bad or list(resolutions) != sorted(resolutions):
            raise ValueError(f"resolutions={list(resolutions)} is invalid for {height}x{width_px} images; list "
                             f"heights from {sorted(set(heights))}, coarsest first (repeats add groups)")
        self.sizes = sizes[: heights.index(min(resolutions)) + 1]  # level i: H/2^i, down to the coarsest group
        self.levels = [heights.index(r) for r in resolutions]  # each group's level
        scale = 1 / math.sqrt(2 * cells * len(self.sizes) + len(resolutions))
        stack = lambda: nn.Sequential(*(Residual(width, scale) for _ in range(cells)))  # noqa: E731
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.up_cells = nn.ModuleList(stack() for _ in self.sizes)
        self.start = nn.Parameter(torch.zeros(1, width, *self.sizes[-1]))
        self.groups = nn.ModuleList(LatentGroup(width, latent_channels, top=i == 0, scale=scale)
                                    for i in range(len(resolutions)))
        self.down_cells = nn.ModuleList(stack() for _ in self.sizes)
        self.head = nn.Conv2d(width, out_channels, 3, padding=1)

    def bottom_up(self, x: Tensor) -> list[Tensor]:
        """Features (B, width, h_i, w_i) at every level i, full resolution first."""
        h, features = self.stem(x), []
        for i, cells in enumerate(self.up_cells):
            h = cells(h if i == 0 else F.adaptive_avg_pool2d(h, self.sizes[i]))
            features.append(h)
        return features

    def top_down(self, features: list[Tensor] | None, batch: int, draw: Draw) -> tuple[Tensor, list, list, list]:
        """(decoder output, codes z_l, posteriors q_l (None without features), priors p_l), groups top first."""
        h = self.start.expand(batch, -1, -1, -1)
        zs, qs, ps = [], [], []
        for level in reversed(range(len(self.sizes))):
            if level < len(self.sizes) - 1:
                h = F.interpolate(h, size=self.sizes[level], mode="nearest")
            for index in (i for i, group_level in enumerate(self.levels) if group_level == level):
                h, z, q, p = self.groups[index](h, None if features is None else features[level],
                                                lambda q, p, index=index: draw(index, q, p))
                zs.append(z), qs.append(q), ps.append(p)
            h = self.down_cells[level](h)
        return self.head(h), zs, qs, ps
