"""Self-attention for conv feature maps: the SAGAN block as released (Zhang et al., 2019), and the two helpers
the conv networks use to place it at the resolutions `attention_resolutions` names."""

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SelfAttention2d(nn.Module):
    """x + gamma * o, o = attention of every position over all positions of a (B, C, H, W) feature map.

    As in the released SAGAN/BigGAN code: 1x1 convs to queries (C/8 channels), keys (C/8) and values (C/2), keys
    and values max-pooled 2x2 (a quarter of the positions attended to), softmax over those positions, a 1x1 conv
    from C/2 back to C, and a learned scalar gate `gamma` initialised to 0, so the block is exactly the identity at
    initialisation and the network learns how much attention to mix in. H and W must be even.

    Args:
        channels: C of the feature maps, at least 8.
        spectral_norm: spectral normalisation on the four 1x1 convs (as SAGAN does in both networks).
    """

    def __init__(self, channels: int, spectral_norm: bool = False) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 8:
            raise ValueError(f"channels={channels!r}: self-attention needs at least 8 channels (queries have C/8)")
        wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda conv: conv)
        self.channels = channels
        self.query = wrap(nn.Conv2d(channels, channels // 8, 1, bias=False))
        self.key = wrap(nn.Conv2d(channels, channels // 8, 1, bias=False))
        self.value = wrap(nn.Conv2d(channels, channels // 2, 1, bias=False))
        self.out = wrap(nn.Conv2d(channels // 2, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        if channels != self.channels or height % 2 or width % 2:
            raise ValueError(f"SelfAttention2d({self.channels}) needs (B, {self.channels}, H, W) with H and W even, "
                             f"got {tuple(x.shape)}")
        query = self.query(x).flatten(2)  # (B, C/8, HW)
        key = F.max_pool2d(self.key(x), 2).flatten(2)  # (B, C/8, HW/4)
        value = F.max_pool2d(self.value(x), 2).flatten(2)  # (B, C/2, HW/4)
        attention = torch.softmax(query.transpose(1, 2) @ key, dim=-1)  # (B, HW, HW/4): each row sums to 1
        attended = (value @ attention.transpose(1, 2)).view(batch, channels // 2, height, width)
        return x + self.gamma * self.out(attended)


def check_attention_resolutions(resolutions: Sequence[int], available: Iterable[int]) -> None:
    """Raise a ValueError unless every requested resolution is the height of one of the network's feature maps."""
    available = sorted(set(available))
    missing = [r for r in resolutions if r not in available]
    if missing:
        raise ValueError(f"attention_resolutions={list(resolutions)}: {missing} is not a feature-map size of this "
                         f"network; choose from {available}")


def attention_at(height: int, channels: int, resolutions: Sequence[int]) -> list[nn.Module]:
    """[SelfAttention2d(channels)] for a feature map of this height if it is one of `resolutions`, else []:
    `layers += attention_at(h, channels, attention_resolutions)` after the conv block that makes that map."""
    return [SelfAttention2d(channels)] if height in resolutions else []
