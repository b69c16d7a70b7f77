"""Conditional ActNorm (c-Glow, Lu & Huang 2020): y = x * exp(s(c)) + b(c), per position and channel.

log|det dy/dx| = sum over channels and positions of s(c); the condition never depends on x, so the
Jacobian is diagonal. s and b come from a zero-initialised conv on the level's condition features
(glow.flows.nets.ZeroConv2d), so the layer starts as the identity; s is bounded to (-3, 3) by
3 tanh(./3) so that no condition can make the inverse's gain larger than e^3.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glow.flows.base import Flow, full_precision, sum_except_batch
from glow.flows.nets import ZeroConv2d, resize_like

SCALE_BOUND = 3.0


class ConditionalActNorm(Flow):
    def __init__(self, channels: int, cond_channels: int):
        super().__init__()
        self.cond_channels = cond_channels
        self.net = ZeroConv2d(cond_channels, 2 * channels)

    def _scale_shift(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        if cond is None:
            raise ValueError("ConditionalActNorm needs the condition features as cond")
        params = self.net(resize_like(cond, x).to(x.dtype))
        raw, shift = params.chunk(2, dim=1)
        return SCALE_BOUND * torch.tanh(raw / SCALE_BOUND), shift

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with full_precision(x):
            log_scale, shift = self._scale_shift(x, cond)
            return x * torch.exp(log_scale) + shift, sum_except_batch(log_scale)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with full_precision(y):
            log_scale, shift = self._scale_shift(y, cond)
            return (y - shift) * torch.exp(-log_scale), -sum_except_batch(log_scale)
