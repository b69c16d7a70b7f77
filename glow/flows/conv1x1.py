"""Invertible 1x1 convolution (Kingma & Dhariwal 2018): a learned channel mixing y = W x per pixel.

log|det| = H * W * log|det W|.

* ``InvConv1x1``: W is a free matrix; log|det W| and W^-1 are computed in float64.
* ``InvConv1x1LU``: W = P L (U + diag(sign * exp(log_s))) with P fixed, L unit lower-triangular and
  U strictly upper-triangular, so log|det W| = sum(log_s) costs O(C).

Both start from a random rotation. They run with autocast switched off: a channel mix is cheap,
and doing it in half precision would break the exact inverse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glow.flows.base import Flow, full_precision, logdet_dtype


def random_rotation(channels: int, generator: torch.Generator | None = None) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator, dtype=torch.float64))
    return q


def _mix(x: Tensor, weight: Tensor) -> Tensor:
    return F.conv2d(x, weight.to(x.dtype).view(*weight.shape, 1, 1))


class _Conv1x1Base(Flow):
    def weight(self) -> Tensor:
        """W in float64."""
        raise NotImplementedError

    def log_abs_det(self) -> Tensor:
        """log|det W| in float64."""
        raise NotImplementedError

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with full_precision(x):
            x = x.to(torch.promote_types(x.dtype, torch.float32))
            y = _mix(x, self.weight())
            logdet = (self.log_abs_det() * (x.shape[-2] * x.shape[-1])).to(logdet_dtype(x))
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with full_precision(y):
            y = y.to(torch.promote_types(y.dtype, torch.float32))
            x = _mix(y, torch.linalg.inv(self.weight()))
            logdet = (-self.log_abs_det() * (y.shape[-2] * y.shape[-1])).to(logdet_dtype(y))
        return x, logdet.expand(y.shape[0])


class InvConv1x1(_Conv1x1Base):
    def __init__(self, channels: int):
        super().__init__()
        self.w = nn.Parameter(random_rotation(channels).float())

    def weight(self) -> Tensor:
        return self.w.double()

    def log_abs_det(self) -> Tensor:
        return torch.linalg.slogdet(self.w.double())[1]


class InvConv1x1LU(_Conv1x1Base):
    def __init__(self, channels: int):
        super().__init__()
        p, lower, upper = torch.linalg.lu(random_rotation(channels))
        s = torch.diagonal(upper)
        self.register_buffer("p", p.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower.float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())

    def weight(self) -> Tensor:
        eye = torch.eye(self.p.shape[0], dtype=torch.float64, device=self.p.device)
        mask = self.lower_mask.double()
        lower = self.lower.double() * mask + eye
        upper = self.upper.double() * mask.T + torch.diag(self.sign_s.double() * torch.exp(self.log_s.double()))
        return self.p.double() @ lower @ upper

    def log_abs_det(self) -> Tensor:
        return self.log_s.double().sum()
