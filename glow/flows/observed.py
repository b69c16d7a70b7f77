"""Observed pixels as their own dequantisation noise: the first layer of a c-Glow (``model.observed_noise``).

Given the condition (observed image at its bin centres c, hole mask m; glow.conditioning), an observed
pixel's dequantised value lies in [c - w/2, c + w/2) with w = 1 / 2^n_bits the bin width, so
u = (x - c) / w + 1/2 is its dequantisation noise, uniform on [0, 1). In the hole (m = 1) y = x; where
observed (m = 0):

    uniform:   y = u - 1/2                      log|dy/dx| = n_bits ln 2
    gaussian:  y = Phi^-1(eps + (1 - 2 eps) u)  log|dy/dx| = n_bits ln 2 + log(1 - 2 eps) - log phi(y)

with Phi the standard normal CDF and phi its density; eps = 1e-4 keeps y in about (-3.7, 3.7) so the map
stays invertible in float32. Both are exact bijections for every condition (the condition, not the
data, decides which pixels are observed); the inverse is x = c + (u - 1/2) w.

Why: without this layer the flow must learn to contract every observed pixel ~1000-fold around a value
it is given anyway, which dominates the loss early in training and leaves the hole unlearned (the c-Glow
of the first c-Glow, before this layer: 2.9 bits/dim and blank, noisy holes after 180 steps). ``uniform`` leaves
the flow a uniform variable to model at every observed pixel: a Gaussian fit to it costs ~0.25 bits, and
to do better the flow must learn from the condition where the noise is. ``gaussian`` hands the observed
pixels over already standard normal, which is exactly the prior's law, so the identity is optimal there
and they cost 0 bits: the flow's capacity and the condition's features go to the hole, and the model's
bits/dim over the hole are exact rather than an upper bound (observed pixels contribute exactly 0 when
the flow leaves them alone).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from glow.flows.base import Flow, full_precision, sum_except_batch

DISTRIBUTIONS = ("uniform", "gaussian")
EPS = 1e-4  # gaussian: the noise is squeezed into [EPS, 1 - EPS) before Phi^-1
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class ObservedAsNoise(Flow):
    def __init__(self, channels: int, n_bits: int = 8, distribution: str = "uniform"):
        super().__init__()
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"model.observed_noise={distribution!r} is not allowed: use one of none, "
                             f"{', '.join(DISTRIBUTIONS)}")
        self.channels, self.n_bits, self.distribution = channels, n_bits, distribution

    def _parts(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor, float]:
        if cond is None or cond.shape[1] != self.channels + 1:
            raise ValueError("ObservedAsNoise needs the inpainting condition (masked image, hole) as cond")
        centres, hole = cond[:, :self.channels].to(x.dtype), cond[:, self.channels:].to(x.dtype).expand_as(x)
        return centres, hole, 2.0 ** -self.n_bits

    def _bin_logdet(self, hole: Tensor) -> Tensor:
        return sum_except_batch(1 - hole) * (self.n_bits * math.log(2))

    def _gaussian_logdet(self, y: Tensor, hole: Tensor) -> Tensor:
        """log|d Phi^-1(eps + (1 - 2 eps) u) / du| = log(1 - 2 eps) - log phi(y), on the observed pixels."""
        per_pixel = math.log1p(-2 * EPS) + HALF_LOG_2PI + 0.5 * y * y
        return sum_except_batch(torch.where(hole.bool(), torch.zeros_like(y), per_pixel))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with full_precision(x):
            centres, hole, width = self._parts(x, cond)
            u = (x - centres) / width + 0.5
            logdet = self._bin_logdet(hole)
            if self.distribution == "uniform":
                return torch.where(hole.bool(), x, u - 0.5), logdet
            v = EPS + (1 - 2 * EPS) * u.clamp(0, 1)  # the clamp only acts on the hole's values
            noise = math.sqrt(2) * torch.erfinv(2 * v - 1)
            y = torch.where(hole.bool(), x, noise)
            return y, logdet + self._gaussian_logdet(y, hole)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with full_precision(y):
            centres, hole, width = self._parts(y, cond)
            logdet = self._bin_logdet(hole)
            if self.distribution == "uniform":
                u = y + 0.5
            else:
                v = 0.5 * (1 + torch.erf(y / math.sqrt(2)))
                u = (v - EPS) / (1 - 2 * EPS)
                logdet = logdet + self._gaussian_logdet(y, hole)
            return torch.where(hole.bool(), y, centres + (u - 0.5) * width), -logdet
