"""Latent interpolation: walk a straight line (or a great circle) between two codes and decode every step."""

import torch
from lightning import LightningModule
from matplotlib.figure import Figure
from torch import Tensor

from ..models.protocols import LatentModel
from .base import FigureCallback, decode_condition, real_batch
from .draw import grid_figure

MODES = ("linear", "slerp")


def interpolate_latents(z0: Tensor, z1: Tensor, steps: int, mode: str = "linear") -> Tensor:
    """Codes from z0 to z1, both ends included: (P, D), (P, D) -> (P, steps, D).

    "slerp" follows the great circle (White, 2016): under a Gaussian prior most mass sits near a sphere, and
    the midpoint of a straight line falls inside it, where decoders have seen few codes.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is unknown; choose one of {MODES}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2 to include both ends, got {steps}")
    t = torch.linspace(0, 1, steps, device=z0.device, dtype=z0.dtype).view(1, -1, 1)
    a, b = z0.unsqueeze(1), z1.unsqueeze(1)
    linear = (1 - t) * a + t * b
    if mode == "linear":
        return linear
    cos = torch.nn.functional.cosine_similarity(z0, z1, dim=-1).clamp(-1, 1).view(-1, 1, 1)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    curved = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / sin.clamp_min(1e-6)
    # Nearly parallel codes: the circle is the line, and dividing by sin(omega) ~ 0 would blow up.
    return torch.where(sin > 1e-4, curved, linear)


def interpolate(model: LatentModel, x0: Tensor, x1: Tensor, steps: int = 10, mode: str = "linear",
                y0: Tensor | None = None, y1: Tensor | None = None, c0: Tensor | None = None) -> Tensor:
    """Decoded interpolations between encodings of x0 and x1 (P, C, H, W each) -> (P, steps, C, H, W).

    The ends decode the two codes, so they equal `model.reconstruct(x0)` and `model.reconstruct(x1)`. A
    conditional model decodes every step under `c0`, the decode condition of x0 (default y0).
    """
    z = interpolate_latents(model.encode(x0, y0), model.encode(x1, y1), steps, mode)
    return decode_paths(model, z, y0 if c0 is None else c0)


def decode_paths(model: LatentModel, z: Tensor, y: Tensor | None = None) -> Tensor:
    """Decode (P, steps, D) codes to (P, steps, C, H, W) images; y (P, ...) conditions each path (None: ignored)."""
    y = None if y is None else y.repeat_interleave(z.shape[1], dim=0)
    images = model.decode(z.flatten(0, 1), y)
    return images.view(*z.shape[:2], *images.shape[1:])


class LatentInterpolation(FigureCallback):
    """One row per pair: `num_pairs` pairs of validation images, then `num_pairs` pairs of N(0, I) draws."""

    key = "interpolation"

    def __init__(self, num_pairs: int = 4, steps: int = 10, mode: str = "linear", every_n_epochs: int = 1,
                 seed: int = 0) -> None:
        super().__init__(every_n_epochs, seed)
        if mode not in MODES or num_pairs < 1 or steps < 2:
            raise ValueError(f"need num_pairs >= 1, steps >= 2 and mode in {MODES}")
        self.num_pairs, self.steps, self.mode = num_pairs, steps, mode

    def images_needed(self) -> int:
        return 2 * self.num_pairs

    def make_figure(self, model: LightningModule, data: object) -> Figure:
        x, y = real_batch(data, 2 * self.num_pairs, model.device)
        pairs = len(x) // 2  # a tiny validation set may hold fewer images than asked for
        c = decode_condition(model, x, y)
        rows = [interpolate(model, x[:pairs], x[pairs:2 * pairs], self.steps, self.mode, y[:pairs], y[pairs:2 * pairs],
                            c[:pairs])]
        generator = torch.Generator().manual_seed(self.seed)  # CPU noise: the same prior pairs on any device
        z = torch.randn(2, self.num_pairs, model.latent_dim, generator=generator).to(model.device)
        # Prior paths borrow the conditions of the data pairs: ignored by unconditional models, needed by a CVAE.
        y_prior = c[torch.arange(self.num_pairs, device=c.device) % len(c)]
        rows.append(decode_paths(model, interpolate_latents(z[0], z[1], self.steps, self.mode), y_prior))
        labels = [f"data {i + 1}" for i in range(pairs)] + [f"prior {i + 1}" for i in range(self.num_pairs)]
        images = torch.cat(rows).flatten(0, 1)
        return grid_figure(images, ncol=self.steps, row_labels=labels, title=f"{self.mode} interpolation")
