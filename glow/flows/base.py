"""The one flow interface, and composition.

Every layer maps ``forward(x, cond=None) -> (y, logdet)`` and ``inverse(y, cond=None) -> (x, logdet)``
where ``logdet`` has shape [B] and holds log|det dy/dx| (forward) or log|det dx/dy| (inverse),
so the two cancel. Log-determinants are accumulated in at least float32 (float64 for a float64
model) even when the surrounding code runs under autocast.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Iterable

import torch
from torch import Tensor, nn


def logdet_dtype(x: Tensor) -> torch.dtype:
    """float32, or float64 when the activations are float64: never a half type."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def sum_except_batch(t: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Sum over every dimension but the first, in ``dtype`` (default: at least float32)."""
    dtype = dtype or logdet_dtype(t)
    return t.to(dtype).reshape(t.shape[0], -1).sum(dim=1)


def zeros_logdet(x: Tensor) -> Tensor:
    return torch.zeros(x.shape[0], dtype=logdet_dtype(x), device=x.device)


def full_precision(x: Tensor):
    """Context that switches autocast off, for the parts that must stay exact (slogdet, W^-1, priors)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return nullcontext()


class Flow(nn.Module):
    """Base class: a bijection with a tractable log|det J|."""

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class FlowSequence(Flow):
    """Composition: applies the layers in order and sums their log-determinants."""

    def __init__(self, layers: Iterable[Flow]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = zeros_logdet(x)
        for layer in self.layers:
            x, logdet = layer(x, cond)
            total = total + logdet
        return x, total

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = zeros_logdet(y)
        for layer in reversed(self.layers):
            y, logdet = layer.inverse(y, cond)
            total = total + logdet
        return y, total
