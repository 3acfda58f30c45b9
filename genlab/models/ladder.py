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

__all__ = ["STD_OFFSET", "Gaussian", "Draw", "gaussian_from", "gaussian_log_prob", "gaussian_kl_between", "Conv",
           "Residual", "LatentGroup", "LadderNetwork"]

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


class Conv(nn.Conv2d):
    """`nn.Conv2d` that runs a 1x1 kernel on a 1x1 map as the matrix product it is (about twice as fast on a CPU)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel_size == (1, 1) and x.shape[-2:] == (1, 1):
            return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]
        return super().forward(x)


def _cell(c_in: int, c_mid: int, c_out: int, last_scale: float = 1.0, kernel: int = 3) -> nn.Sequential:
    """VDVAE's bottleneck block, GELU before each conv: 1x1, kxk, kxk, 1x1; the last conv's init scaled. On a 1x1
    map a zero-padded 3x3 conv sees only its centre tap, so kernel 1 is the same function at 1/9 of the cost."""
    convs = [Conv(c_in, c_mid, 1), Conv(c_mid, c_mid, kernel, padding=kernel // 2),
             Conv(c_mid, c_mid, kernel, padding=kernel // 2), Conv(c_mid, c_out, 1)]
    with torch.no_grad():
        convs[-1].weight.mul_(last_scale)
        convs[-1].bias.mul_(last_scale)
    return nn.Sequential(*(layer for conv in convs for layer in (nn.GELU(), conv)))


class Residual(nn.Module):
    """x + cell(x), the residual stream of both passes; `scale` shrinks the cell's initial output (VDVAE:
    1 / sqrt(number of cells)) so that a deep stack starts near the identity."""

    def __init__(self, width: int, scale: float, kernel: int = 3) -> None:
        super().__init__()
        self.body = _cell(width, max(width // 4, 1), width, scale, kernel)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class LatentGroup(nn.Module):
    """One top-down block: prior p(z | h) (N(0, I) for the top group), posterior q(z | h, features), z into h."""

    def __init__(self, width: int, latent_channels: int, top: bool, scale: float, kernel: int = 3) -> None:
        super().__init__()
        mid = max(width // 4, 1)
        self.latent_channels = latent_channels
        self.posterior = _cell(2 * width, mid, 2 * latent_channels, kernel=kernel)
        # prior mean/std and a feature added to h; zero at init: p = N(0, I), h unchanged (VDVAE's zero_last)
        self.prior = None if top else _cell(width, mid, 2 * latent_channels + width, last_scale=0.0, kernel=kernel)
        self.project = Conv(latent_channels, width, 1)
        with torch.no_grad():
            self.project.weight.mul_(scale)
        self.cell = Residual(width, scale, kernel)

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
    """Bottom-up encoder, top-down latent groups at `resolutions` (heights, coarsest first) and an output conv.

    The passes run from the finest group's resolution down: when the image is r x r times that map (r > 1), the
    stem reads each r x r patch as C r^2 channels (pixel unshuffle) and the head writes out_channels r^2 channels
    that pixel shuffle back to the image, so no cell runs at a resolution no latent group needs. Otherwise (r = 1,
    or sizes that do not divide) the passes start at full resolution. 1x1 maps use 1x1 convs (`_cell`)."""

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
        finest, coarsest = heights.index(max(resolutions)), heights.index(min(resolutions))
        fine_h, fine_w = sizes[finest]
        patch = height // fine_h
        if height != patch * fine_h or width_px != patch * fine_w:
            finest, patch = 0, 1  # the finest map does not tile the image: start at full resolution
        self.patch = patch
        self.sizes = sizes[finest: coarsest + 1]  # level i: the i-th ceil-halving from the finest group's size
        self.levels = [heights.index(r) - finest for r in resolutions]  # each group's level
        scale = 1 / math.sqrt(2 * cells * len(self.sizes) + len(resolutions))
        kernel = [1 if size == (1, 1) else 3 for size in self.sizes]
        stack = lambda k: nn.Sequential(*(Residual(width, scale, k) for _ in range(cells)))  # noqa: E731
        self.stem = Conv(channels * patch ** 2, width, kernel[0], padding=kernel[0] // 2)
        self.up_cells = nn.ModuleList(stack(k) for k in kernel)
        self.start = nn.Parameter(torch.zeros(1, width, *self.sizes[-1]))
        self.groups = nn.ModuleList(LatentGroup(width, latent_channels, top=i == 0, scale=scale,
                                                kernel=kernel[self.levels[i]]) for i in range(len(resolutions)))
        self.down_cells = nn.ModuleList(stack(k) for k in kernel)
        self.head = Conv(width, out_channels * patch ** 2, kernel[0], padding=kernel[0] // 2)

    def _downsample(self, h: Tensor, level: int) -> Tensor:
        """h at level - 1 -> level: a 2x2 mean where the size halves exactly, else adaptive pooling."""
        size = self.sizes[level]
        if h.shape[-2] == 2 * size[0] and h.shape[-1] == 2 * size[1]:
            return F.avg_pool2d(h, 2)
        return F.adaptive_avg_pool2d(h, size)

    def bottom_up(self, x: Tensor) -> list[Tensor]:
        """Features (B, width, h_i, w_i) at every level i, the finest first."""
        if self.sizes[0] == (1, 1):  # one patch: pixel unshuffle is a flatten
            x = x.reshape(len(x), -1, 1, 1)
        elif self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)
        h, features = self.stem(x), []
        for i, cells in enumerate(self.up_cells):
            h = cells(h if i == 0 else self._downsample(h, i))
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
        out = self.head(h)
        if self.sizes[0] == (1, 1) and self.patch > 1:
            out = out.reshape(len(out), -1, self.patch * self.sizes[0][0], self.patch * self.sizes[0][1])
        elif self.patch > 1:
            out = F.pixel_shuffle(out, self.patch)
        return out, zs, qs, ps
