"""The condition encoders of an image-conditional Glow (``model.cond_encoder``): (masked image, mask)
-> one feature map per level, at that level's resolution H / 2^(l+1), finest first.

* ``ConditionEncoder`` (``cnn``): a small CNN that downsamples with stride-2 convs.
* ``UNetEncoder`` (``unet``, c-Glow's): goes down to the coarsest level with stride-2 convs, then back
  up, concatenating the down path's map at each level (skip connections):

    (x_obs, mask) --stem--> H --down--> H/2 --down--> ... --> H/2^L
                                          |                     |
                          features[0] <--up-- ... <--up-- features[L-1]

  so every level's features see the whole image (through the coarsest level) and the fine detail
  (through the skip). Why a U-Net rather than the plain down-sampling CNN: the fine levels otherwise
  see only a small neighbourhood of the observed pixels, which is too little to continue a digit
  across a 14x14 hole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class UNetEncoder(nn.Module):
    def __init__(self, in_channels: int, levels: int, channels: int = 32):
        super().__init__()
        self.out_channels = channels
        self.stem = _conv(in_channels, channels)
        self.down = nn.ModuleList(nn.Sequential(_conv(channels, channels, 2), _conv(channels, channels))
                                  for _ in range(levels))
        self.bottom = nn.Sequential(_conv(channels, channels), _conv(channels, channels))
        self.up = nn.ModuleList(nn.Sequential(_conv(2 * channels, channels), _conv(channels, channels))
                                for _ in range(levels - 1))

    def forward(self, condition: Tensor) -> list[Tensor]:
        h = self.stem(condition)
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
        h = self.bottom(h) + h
        features = [h]
        for level in reversed(range(len(self.up))):
            h = F.interpolate(h, size=skips[level].shape[-2:], mode="nearest")
            h = self.up[level](torch.cat([h, skips[level]], dim=1))
            features.append(h)
        return features[::-1]  # finest first, as Glow's levels
