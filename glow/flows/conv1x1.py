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
    def __init__(self):
        super().__init__()
        self._frozen_key: tuple | None = None
        self._frozen: dict[tuple[bool, torch.dtype], Tensor] = {}

    def weight(self) -> Tensor:
        """W in float64."""
        raise NotImplementedError

    def log_abs_det(self) -> Tensor:
        """log|det W| in float64."""
        raise NotImplementedError

    def mixing_matrix(self, inverse: bool, dtype: torch.dtype) -> Tensor:
        """W (or W^-1) in ``dtype``, ready for the conv.

        Where no gradient is wanted (sampling, evaluation, and the no-grad forward and inversion of
        model.memory=invertible) it is cached until a parameter or buffer changes: an optimiser step or
        load_state_dict bumps a tensor's version, and .to() gives it new storage. Without the cache an
        invertible-mode step assembled each LU weight three times and inverted it once (forward,
        inversion, re-forward: scripts/benchmark.py suite=ratio, README "Performance").
        """
        tensors = [t for t in (*self.parameters(recurse=False), *self.buffers(recurse=False)) if t.dim()]
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            w = self.weight()
            return (torch.linalg.inv(w) if inverse else w).to(dtype)
        key = tuple((t.data_ptr(), t._version, t.device) for t in tensors)
        if key != self._frozen_key:
            self._frozen_key, self._frozen = key, {}
        if (inverse, dtype) not in self._frozen:
            with torch.no_grad():
                if (False, torch.float64) not in self._frozen:  # W itself, the source of every entry
                    self._frozen[False, torch.float64] = self.weight()
                w = self._frozen[False, torch.float64]
                self._frozen[inverse, dtype] = (torch.linalg.inv(w) if inverse else w).to(dtype)
        return self._frozen[inverse, dtype]

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with full_precision(x):
            x = x.to(torch.promote_types(x.dtype, torch.float32))
            y = _mix(x, self.mixing_matrix(False, x.dtype))
            logdet = (self.log_abs_det() * (x.shape[-2] * x.shape[-1])).to(logdet_dtype(x))
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with full_precision(y):
            y = y.to(torch.promote_types(y.dtype, torch.float32))
            x = _mix(y, self.mixing_matrix(True, y.dtype))
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
