"""Helpers shared by the flows on vectors [B, D] (planar, radial, Sylvester, MADE-based):
where a layer's parameters come from (free, or amortised from a condition vector), and ActNorm on vectors.

A layer built with ``cond_dim > 0`` takes its parameters per sample from ``cond`` [B, cond_dim] through
its own linear head (amortised, as VAE posteriors are: the encoder's features are the condition);
with ``cond_dim == 0`` they are free parameters shared by every sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glow.flows.actnorm import ActNorm
from glow.flows.base import Flow, sum_except_batch


class ParameterSource(nn.Module):
    """``count`` raw parameters per sample: a free vector, or a linear head on ``cond``.

    ``cond`` may have fewer rows than the batch: with G rows for B = G * S samples, row g serves the S
    consecutive samples g*S .. g*S + S - 1 (a VAE's S posterior samples of one image), and the head runs
    once per row rather than once per sample: the importance-weighted bound's S = 100 samples per image
    would otherwise repeat the same head (2,300 outputs for a Sylvester layer) a hundred times.
    """

    def __init__(self, count: int, cond_dim: int = 0, init_std: float = 0.01):
        super().__init__()
        self.count, self.cond_dim = count, cond_dim
        if cond_dim:
            self.head = nn.Linear(cond_dim, count)
            nn.init.normal_(self.head.weight, std=init_std)
            nn.init.normal_(self.head.bias, std=init_std)
        else:
            self.raw = nn.Parameter(torch.randn(count) * init_std)

    def grouped(self, batch: int, cond: Tensor | None, like: Tensor) -> tuple[Tensor, int]:
        """(raw [G, count], S): one row per group of S = batch / G consecutive samples (G = 1 when free)."""
        if not self.cond_dim:
            return self.raw.to(like.dtype)[None], batch
        if cond is None:
            raise ValueError("this layer's parameters are amortised (cond_dim > 0): pass cond [B, cond_dim]")
        return self.head(cond.to(like.dtype)), group_size(batch, cond)

    def forward(self, batch: int, cond: Tensor | None, like: Tensor) -> Tensor:
        """raw [batch, count]: one row per sample."""
        raw, size = self.grouped(batch, cond, like)
        return raw.expand(batch, -1) if not self.cond_dim else raw.repeat_interleave(size, 0)


def group_size(batch: int, cond: Tensor) -> int:
    """S, the samples per row of ``cond`` (see ParameterSource); a row count that does not divide is an error."""
    rows = cond.shape[0]
    if rows == 0 or batch % rows:
        raise ValueError(f"cond has {rows} rows for a batch of {batch}: use a divisor of the batch size")
    return batch // rows


class VectorActNorm(ActNorm):
    """ActNorm over the D entries of a vector [B, D]: glow.flows.ActNorm on [B, D, 1, 1], so it shares its
    data-dependent init (explicit, DDP-synced, persistent flag).

    Unlike Glow's per-channel ActNorm, every entry (pixel) gets its own statistics, and a border pixel
    that is 0 in every init image has the std of the dequantisation noise alone (~0.001): a 900x gain
    that sends the first test digit touching it to -1e5 nats (measured: train bits/dim spiking to 216
    within 40 steps of MAF on MNIST). So the init std is floored at ``min_init_std`` (0.1: a gain <= 10);
    training can still learn larger scales. A model stacking several should floor the later ones at 1
    (they then never amplify at init), or the gains multiply layer after layer.
    """

    def __init__(self, dim: int, min_init_std: float = 0.1):
        super().__init__(dim)
        self.min_init_std = min_init_std

    @torch.no_grad()
    def initialize_from(self, x: Tensor) -> None:
        super().initialize_from(x)
        self.log_scale.clamp_(max=-math.log(self.min_init_std))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, logdet = super().forward(x[:, :, None, None], cond)
        return y.flatten(1), logdet

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, logdet = super().inverse(y[:, :, None, None], cond)
        return x.flatten(1), logdet


class Logit(Flow):
    """The logit transform of MAF and RealNVP on images: y in [-0.5, 0.5) -> logit(λ + (1 - 2λ)(y + 0.5)).

    log|det| = Σ log(1 - 2λ) - log p - log(1 - p),  p = λ + (1 - 2λ)(y + 0.5).
    It stretches the bins near black and white, where most MNIST pixels sit: a per-pixel affine flow
    would otherwise need a gain of ~256 to put the density of a constant bin on it (measured in the
    README: MAF without it trains to far worse bits/dim in the same steps). Elementwise, any shape.
    """

    def __init__(self, alpha: float = 1e-6):
        super().__init__()
        if not 0 < alpha < 0.5:
            raise ValueError(f"model.logit={alpha!r} is not allowed: use a number in (0, 0.5) or null")
        self.alpha = alpha

    def forward(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * (y + 0.5)
        # data give p in [λ, 1 - λ); the clamp only keeps points outside the data range (a distilled
        # student's samples, rounded by float32) finite instead of -inf
        p = p.clamp(self.alpha / 2, 1 - self.alpha / 2)
        log_p, log_q = torch.log(p), torch.log1p(-p)
        return log_p - log_q, sum_except_batch(math.log(1 - 2 * self.alpha) - log_p - log_q)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y = (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha) - 0.5
        # log p and log(1 - p) from z directly: stable where sigmoid(z) rounds to 0 or 1
        logdet = math.log(1 - 2 * self.alpha) - F.logsigmoid(z) - F.logsigmoid(-z)
        return y, -sum_except_batch(logdet)
