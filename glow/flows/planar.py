"""Planar flow (Rezende & Mohamed 2015):  f(z) = z + û tanh(wᵀz + b).

    log|det df/dz| = log(1 + ûᵀw tanh'(wᵀz + b))

Invertibility needs wᵀû >= -1. For any raw u the paper's constraint
û = u + (m(wᵀu) - wᵀu) w / ||w||², with m(a) > -1, gives wᵀû = m(wᵀu) > -1, so the layer is invertible
for arbitrary raw parameters and 1 + ûᵀw tanh' > 0.

m(a) = -1 + softplus(a + log(e - 1)): the paper's -1 + softplus(a) shifted so that m(0) = 0. With the
paper's m, small raw parameters (as a fresh amortisation head gives) have wᵀû = m(0) = -0.31, so
||û|| >= 0.31 / ||w|| is large exactly when w is small: measured on a fresh K=4 VAE, ||û|| ~ 2.7 and
Σ logdet = -1.5 nats, 3 nats of -ELBO worse than the plain VAE at step 0. With m(0) = 0 the correction
is at most 0.37 |wᵀu| / ||w|| <= 0.37 ||u||, so small raw parameters give a near-identity layer.

Inverse: numerical. With a = wᵀz, wᵀf(z) = a + (wᵀû) tanh(a + b) is strictly increasing in a, so a is
the unique root, found by bisection in float64 on [wᵀy - |wᵀû|, wᵀy + |wᵀû|] (60 halvings: exact to
float64 precision); then z = y - û tanh(a + b).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from glow.flows.base import Flow
from glow.flows.vector import ParameterSource

BISECTION_STEPS = 60
SHIFT = math.log(math.e - 1)  # softplus(SHIFT) = 1: m(0) = 0


class Planar(Flow):
    def __init__(self, dim: int, cond_dim: int = 0):
        super().__init__()
        self.dim = dim
        self.source = ParameterSource(2 * dim + 1, cond_dim, init_std=0.1 if not cond_dim else 0.01)

    def parameters_for(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(û [B, D], w [B, D], b [B, 1]) with wᵀû > -1."""
        raw = self.source(z.shape[0], cond, z)
        u, w, b = raw[:, :self.dim], raw[:, self.dim:2 * self.dim], raw[:, 2 * self.dim:]
        wu = (w * u).sum(-1, keepdim=True)
        u_hat = u + (F.softplus(wu + SHIFT) - 1 - wu) * w / (w * w).sum(-1, keepdim=True).clamp_min(1e-12)
        return u_hat, w, b

    def forward(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        u, w, b = self.parameters_for(z, cond)
        t = torch.tanh((w * z).sum(-1, keepdim=True) + b)
        wu = (w * u).sum(-1)
        logdet = torch.log1p(wu * (1 - t.squeeze(-1) ** 2))
        return z + u * t, logdet

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        u, w, b = (p.double() for p in self.parameters_for(y, cond))
        wy, wu = (w * y.double()).sum(-1), (w * u).sum(-1)
        low, high = wy - wu.abs(), wy + wu.abs()
        with torch.no_grad():  # the root's value; the gradient (if needed) flows through the formula below
            for _ in range(BISECTION_STEPS):
                mid = (low + high) / 2
                above = mid + wu * torch.tanh(mid + b.squeeze(-1)) > wy
                high, low = torch.where(above, mid, high), torch.where(above, low, mid)
            a = (low + high) / 2
        t = torch.tanh(a + b.squeeze(-1))
        x = y.double() - u * t[:, None]
        logdet = -torch.log1p(wu * (1 - t ** 2))
        return x.to(y.dtype), logdet.to(y.dtype if y.dtype == torch.float64 else torch.float32)
