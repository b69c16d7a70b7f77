"""Neural networks inside the flow: coupling networks and the inpainting condition encoder.

They need not be invertible; the flow layers around them are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ZeroConv2d(nn.Conv2d):
    """A 3x3 convolution that starts at exactly zero, so each coupling starts as the identity."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


class CouplingNet(nn.Module):
    """conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero-init conv3x3, as in Glow (without its inner ActNorm).

    An optional condition feature map (same height and width) is concatenated to the input.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, cond_channels: int = 0):
        super().__init__()
        self.cond_channels = cond_channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels + cond_channels, hidden_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels, kernel_size=1),
            nn.ReLU(inplace=True),
            ZeroConv2d(hidden_channels, out_channels),
        )

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.cond_channels:
            if cond is None:
                raise ValueError("this coupling network is conditional: pass the condition features as cond")
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        return self.body(x)


class ConditionEncoder(nn.Module):
    """A small CNN over (masked image, mask) giving one feature map per level, at that level's resolution.

    Level l of a Glow works at resolution H / 2^(l+1); the encoder downsamples with stride-2 convs so
    feature ``l`` has exactly that size.
    """

    def __init__(self, in_channels: int, levels: int, channels: int = 32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                          nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
            for _ in range(levels)
        )
        self.out_channels = channels

    def forward(self, condition: Tensor) -> list[Tensor]:
        h = self.stem(condition)
        features = []
        for block in self.down:
            h = block(h)
            features.append(h)
        return features


def resize_like(features: Tensor, reference: Tensor) -> Tensor:
    if features.shape[-2:] == reference.shape[-2:]:
        return features
    return F.interpolate(features, size=reference.shape[-2:], mode="nearest")
