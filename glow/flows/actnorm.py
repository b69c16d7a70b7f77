"""ActNorm (Kingma & Dhariwal 2018): a per-channel affine map y = (x + loc) * exp(log_scale).

log|det| = H * W * sum(log_scale).

Data-dependent initialisation sets loc and log_scale so that the outputs on an init batch have zero
mean and unit variance per channel. It runs only inside an explicit ``initialization`` context
(see glow.model.Glow.initialize), never as a side effect of an eval or sanity-check batch. The
``initialized`` flag is a persistent buffer, so a model loaded from a checkpoint never re-initialises.
Under torch.distributed the statistics are all-reduced, so every rank gets identical parameters.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from glow.flows.base import Flow, full_precision, logdet_dtype


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
        with full_precision(x):
            x = x.double()
            stats = torch.stack([
                torch.full((x.shape[1],), float(x.numel() // x.shape[1]), dtype=x.dtype, device=x.device),
                x.sum(dim=(0, 2, 3)),
                (x * x).sum(dim=(0, 2, 3)),
            ])
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(stats)  # identical init on every rank
            count, total, total_sq = stats
            mean = total / count
            var = (total_sq / count - mean * mean).clamp_min(0.0)
            std = var.sqrt()
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

    Why: on MNIST most pixels are black in almost every image, so after dequantisation they have a
    std of about 1/(256*sqrt(12)), ~900x below the prior's. Glow's ActNorm is per channel and its
    affine coupling scale sigmoid(h+2) can only contract, so the flow can expand those pixels only
    by contracting every other one in the couplings (log-scales down to about -6.6 on real data)
    and expanding whole channels; sampling then divides by those tiny scales and amplifies any
    error to inf. One per-pixel affine map at the input gives the flow that expansion directly.
    It is exact (log|det| = sum(log_scale)), and ``min_std`` caps the init gain (here 50x) so a
    pixel that happens to be constant in the init batch does not get an extreme scale.
    """

    min_std = 0.02

    def __init__(self, shape: tuple[int, int, int]):
        super().__init__(shape[0])
        self.loc = nn.Parameter(torch.zeros(1, *shape))
        self.log_scale = nn.Parameter(torch.zeros(1, *shape))

    @torch.no_grad()
    def initialize_from(self, x: Tensor) -> None:
        with full_precision(x):
            x = x.double()
            stats = torch.stack([torch.full_like(x[0], float(x.shape[0])), x.sum(0), (x * x).sum(0)])
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(stats)  # identical init on every rank
            count, total, total_sq = stats
            mean = total / count
            std = (total_sq / count - mean * mean).clamp_min(0.0).sqrt()
            self.loc.copy_(-mean.unsqueeze(0))
            self.log_scale.copy_(-torch.log(std.clamp_min(self.min_std)).unsqueeze(0))
            self.initialized.fill_(True)

    def _logdet(self, x: Tensor) -> Tensor:
        return self.log_scale.to(logdet_dtype(x)).sum().expand(x.shape[0])
