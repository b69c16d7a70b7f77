"""Squeeze: 2x2 space-to-depth, [B, C, H, W] -> [B, 4C, H/2, W/2]. A permutation, so log|det| = 0."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from glow.flows.base import Flow, zeros_logdet


class Squeeze(Flow):
    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"cannot squeeze an image of size {tuple(x.shape[-2:])}: height and width must be even")
        return F.pixel_unshuffle(x, 2), zeros_logdet(x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return F.pixel_shuffle(y, 2), zeros_logdet(y)
