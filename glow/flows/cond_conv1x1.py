"""Conditional invertible 1x1 convolution (c-Glow, Lu & Huang 2020): y = W(c) x at every pixel.

    W(c) = W0 @ L(c) @ U(c)

W0 is a learned LU-parameterised matrix (glow.flows.conv1x1.InvConv1x1LU's, same init: a random
rotation). L(c) is unit lower-triangular and U(c) upper-triangular with diagonal exp(log_s(c)); their
entries are a zero-initialised linear function of the spatially averaged condition features, one
matrix per sample. Why this form: Lu & Huang let a network output W directly, which can be singular.
Here det L(c) = 1 and det U(c) = exp(sum log_s(c)) > 0 whatever the network outputs, so W(c) is
invertible for ANY condition and

    log|det dy/dx| = H * W * (log|det W0| + sum log_s(c)),

exact and O(C). At the start L = U = I, i.e. the layer is W0. Runs in float64 for the matrices
(as the unconditional 1x1 conv does) with autocast off.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glow.flows.base import Flow, full_precision, logdet_dtype
from glow.flows.conv1x1 import InvConv1x1LU
from glow.flows.nets import ZeroLinear

LOG_S_BOUND = 3.0


class ConditionalInvConv1x1(Flow):
    def __init__(self, channels: int, cond_channels: int):
        super().__init__()
        self.channels, self.cond_channels = channels, cond_channels
        self.base = InvConv1x1LU(channels)
        self.net = ZeroLinear(cond_channels, channels * channels)
        self.register_buffer("strict_lower", torch.tril(torch.ones(channels, channels), -1), persistent=False)

    def factors(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """(W(c) [B, C, C], sum log_s(c) [B]) in float64."""
        if cond is None:
            raise ValueError("ConditionalInvConv1x1 needs the condition features as cond")
        c = self.channels
        raw = self.net(cond.double().mean(dim=(2, 3)).to(self.net.linear.weight.dtype)).double().view(-1, c, c)
        lower_mask = self.strict_lower.double()
        eye = torch.eye(c, dtype=torch.float64, device=raw.device)
        log_s = LOG_S_BOUND * torch.tanh(torch.diagonal(raw, dim1=1, dim2=2) / LOG_S_BOUND)
        lower = raw * lower_mask + eye
        upper = raw * lower_mask.T + torch.diag_embed(torch.exp(log_s))
        return self.base.weight() @ lower @ upper, log_s.sum(1)

    def _logdet(self, log_s_sum: Tensor, x: Tensor) -> Tensor:
        return ((self.base.log_abs_det() + log_s_sum) * (x.shape[-2] * x.shape[-1])).to(logdet_dtype(x))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with full_precision(x):
            w, log_s_sum = self.factors(cond)
            x = x.to(torch.promote_types(x.dtype, torch.float32))
            y = torch.einsum("bij,bjhw->bihw", w.to(x.dtype), x)
        return y, self._logdet(log_s_sum, x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        with full_precision(y):
            w, log_s_sum = self.factors(cond)
            y = y.to(torch.promote_types(y.dtype, torch.float32))
            x = torch.einsum("bij,bjhw->bihw", torch.linalg.inv(w).to(y.dtype), y)
        return x, -self._logdet(log_s_sum, y)
