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
from glow.flows.cache import cached, no_grad_entries


def random_rotation(channels: int, generator: torch.Generator | None = None) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator, dtype=torch.float64))
    return q


def _mix(x: Tensor, weight: Tensor) -> Tensor:
    """y[:, i] = sum_j weight[i, j] x[:, j] at every pixel.

    On a channels_last x this is one GEMM, pixels x channels times weight^T, whose result is
    channels_last again. Why: oneDNN's 1x1 convolution costs ~0.1 ms a call even at 12-48 channels;
    the GEMM was 2-4x faster forwards and ~1.7x forwards + backwards at the shapes of
    scripts/benchmark.py suite=ratio (batch 16; 12x16x16, 24x8x8, 48x4x4; 2 threads).
    NCHW inputs keep the convolution, so their outputs stay NCHW.
    """
    weight = weight.to(x.dtype)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.matmul(x.permute(0, 2, 3, 1), weight.T).permute(0, 3, 1, 2)
    return F.conv2d(x, weight.view(*weight.shape, 1, 1))


class _Conv1x1Base(Flow):
    def weight(self) -> Tensor:
        """W in float64."""
        raise NotImplementedError

    def log_abs_det(self) -> Tensor:
        """log|det W| in float64."""
        raise NotImplementedError

    def _frozen_entries(self) -> dict | None:
        """The no-grad cache of W, W^-1 and log|det W| (glow.flows.cache), or None where a gradient is
        wanted (the caller then computes afresh). Without it an invertible-mode step assembled each LU
        weight three times and inverted it once (forward, inversion, re-forward: docs/performance.md).
        The key reads ``_parameters`` / ``_buffers`` directly: going through ``parameters()`` cost more
        than the 12-48-channel matrix product it guards.
        """
        tensors = [t for t in (*self._parameters.values(), *self._buffers.values()) if t is not None]
        return no_grad_entries(self, "_frozen", tensors)

    def mixing_matrix(self, inverse: bool, dtype: torch.dtype) -> Tensor:
        """W (or W^-1) in ``dtype``, ready for the conv; cached where no gradient is wanted."""
        frozen = self._frozen_entries()
        if frozen is None:
            w = self.weight()
            return (torch.linalg.inv(w) if inverse else w).to(dtype)
        if (inverse, dtype) not in frozen:
            with torch.no_grad():
                if (False, torch.float64) not in frozen:  # W itself, the source of every entry
                    frozen[False, torch.float64] = self.weight()
                w = frozen[False, torch.float64]
                frozen[inverse, dtype] = (torch.linalg.inv(w) if inverse else w).to(dtype)
        return frozen[inverse, dtype]

    def _logdet(self, x: Tensor, sign: float) -> Tensor:
        """sign * H * W * log|det W| per sample, in x's logdet dtype; cached like W where no gradient
        is wanted."""
        pixels = x.shape[-2] * x.shape[-1]
        frozen = self._frozen_entries()
        if frozen is None:
            return (sign * pixels * self.log_abs_det()).to(logdet_dtype(x)).expand(x.shape[0])
        entry = ("logdet", sign * pixels, logdet_dtype(x))
        if entry not in frozen:
            with torch.no_grad():
                frozen[entry] = (sign * pixels * self.log_abs_det()).to(logdet_dtype(x))
        return frozen[entry].expand(x.shape[0])

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with full_precision(x):
            x = x.to(torch.promote_types(x.dtype, torch.float32))
            return _mix(x, self.mixing_matrix(False, x.dtype)), self._logdet(x, 1.0)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with full_precision(y):
            y = y.to(torch.promote_types(y.dtype, torch.float32))
            return _mix(y, self.mixing_matrix(True, y.dtype)), self._logdet(y, -1.0)


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

    def _constants(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """P, the lower mask, I and sign(s) in float64, converted once per buffer change (not on every
        assembly: the conversions were a quarter of weight()'s ops; glow.flows.cache)."""
        def make():
            p, mask, sign = (b.detach().double() for b in (self.p, self.lower_mask, self.sign_s))
            return p, mask, torch.eye(p.shape[0], dtype=torch.float64, device=p.device), sign
        return cached(self, "_float64_constants", (self.p, self.lower_mask, self.sign_s), make)

    def weight(self) -> Tensor:
        p, mask, eye, sign = self._constants()
        lower = self.lower.double() * mask + eye
        upper = self.upper.double() * mask.T + torch.diag(sign * torch.exp(self.log_s.double()))
        return p @ lower @ upper

    def log_abs_det(self) -> Tensor:
        return self.log_s.double().sum()
