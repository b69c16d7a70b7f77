"""ActNorm (Kingma & Dhariwal 2018): a per-channel affine map y = (x + loc) * exp(log_scale).

log|det| = H * W * sum(log_scale).

Data-dependent initialisation sets loc and log_scale so that the outputs on an init batch have zero
mean and unit variance per channel. It runs only inside an explicit ``initialization`` context
(see glow.model.Glow.initialize), never as a side effect of an eval or sanity-check batch. The
``initialized`` flag is a persistent buffer, so a model loaded from a checkpoint never re-initialises.
Under torch.distributed the statistics are all-reduced, so every rank gets identical parameters.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from glow.flows.base import Flow, full_precision, logdet_dtype


def synced_mean_std(x: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Mean and std of x over ``dims`` in float64; under torch.distributed the sums are all-reduced,
    so every rank gets identical statistics (and identical ActNorm parameters)."""
    with full_precision(x):
        x = x.double()
        total = x.sum(dim=dims)
        count = torch.full_like(total, float(x.numel() // total.numel()))
        stats = torch.stack([count, total, (x * x).sum(dim=dims)])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        count, total, total_sq = stats
        mean = total / count
        return mean, (total_sq / count - mean * mean).clamp_min(0.0).sqrt()


class ActNorm(Flow):
    # Channels whose std is below this carry no signal to normalise: leave their scale at 1 so that
    # a constant channel (e.g. a zero border) does not get a 1e6 gain that explodes later.
    min_std = 1e-6

    def __init__(self, channels: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self.init_pending = False  # set by Glow.initialize; never persisted

    @torch.no_grad()
    def initialize_from(self, x: Tensor) -> None:
        mean, std = synced_mean_std(x, dims=(0, 2, 3))
        log_scale = torch.where(std > self.min_std, -torch.log(std.clamp_min(self.min_std)), torch.zeros_like(std))
        self.loc.copy_(-mean.view_as(self.loc))
        self.log_scale.copy_(log_scale.view_as(self.log_scale))
        self.initialized.fill_(True)

    def _logdet(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        value = self.log_scale.to(logdet_dtype(x)).sum() * (h * w)
        return value.expand(x.shape[0])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.init_pending and not bool(self.initialized):
            self.initialize_from(x)
        y = (x + self.loc) * torch.exp(self.log_scale)
        return y, self._logdet(x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = y * torch.exp(-self.log_scale) - self.loc
        return x, -self._logdet(y)


class DiagonalScale(Flow):
    """NICE's final scaling layer: one learned log-scale per dimension, y = x * exp(s)."""

    def __init__(self, shape: tuple[int, int, int]):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(1, *shape))

    def _logdet(self, x: Tensor) -> Tensor:
        return self.log_scale.to(logdet_dtype(x)).sum().expand(x.shape[0])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x * torch.exp(self.log_scale), self._logdet(x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y * torch.exp(-self.log_scale), -self._logdet(y)


class PixelActNorm(ActNorm):
    """ActNorm with one (loc, log_scale) per dimension (channel and position), data-initialised.

    An option (``model.pixel_actnorm``, off by default): on MNIST most pixels are black in almost
    every image, with a dequantised std ~900x below the prior's, and Glow's per-channel ActNorm
    cannot expand them per position. Measured on MNIST (docs/training.md, learning curves) it learns faster
    in the first ~200 steps but ends level at 400, and it does not stop a sigmoid-scale Glow's
    samples blowing up (the two-sided coupling scale does). It is exact
    (log|det| = sum(log_scale)); ``min_std`` caps the init gain at 50x so a pixel that happens to
    be constant in the init batch does not get an extreme scale.
    """

    min_std = 0.02

    def __init__(self, shape: tuple[int, int, int]):
        super().__init__(shape[0])
        self.loc = nn.Parameter(torch.zeros(1, *shape))
        self.log_scale = nn.Parameter(torch.zeros(1, *shape))

    @torch.no_grad()
    def initialize_from(self, x: Tensor) -> None:
        mean, std = synced_mean_std(x, dims=(0,))
        self.loc.copy_(-mean.view_as(self.loc))
        self.log_scale.copy_(-torch.log(std.clamp_min(self.min_std)).view_as(self.log_scale))
        self.initialized.fill_(True)

    def _logdet(self, x: Tensor) -> Tensor:
        return self.log_scale.to(logdet_dtype(x)).sum().expand(x.shape[0])


@torch.no_grad()
def initialize_actnorms(model: nn.Module, x: Tensor, log_prob: Callable[[Tensor], Tensor]) -> bool:
    """Data-dependent init of every ActNorm in ``model`` (subclasses included) from one ``log_prob``
    pass over the init batch ``x``, outside autocast; a no-op once all are initialised. Returns whether
    it ran. Under torch.distributed each ActNorm all-reduces its statistics, so every rank must call
    this with its own batch, and all end with identical parameters."""
    actnorms = [m for m in model.modules() if isinstance(m, ActNorm)]
    if all(bool(a.initialized) for a in actnorms):
        return False
    for a in actnorms:
        a.init_pending = True
    try:
        with torch.autocast(device_type=x.device.type, enabled=False):
            log_prob(x.float() if x.dtype != torch.float64 else x)
    finally:
        for a in actnorms:
            a.init_pending = False
    return True


def actnorms_initialized(model: nn.Module) -> bool:
    return all(bool(m.initialized) for m in model.modules() if isinstance(m, ActNorm))
