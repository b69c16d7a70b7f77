"""Radial flow (Rezende & Mohamed 2015):  f(z) = z + β h(α, r) (z - z₀),  r = ||z - z₀||, h = 1 / (α + r).

    log|det df/dz| = (D - 1) log(1 + β h) + log(1 + β h + β h'(r) r),   h' = -1 / (α + r)²

Invertibility needs β >= -α. For arbitrary raw parameters α = softplus(α_raw) > 0 and
β = -α + softplus(β_raw) > -α, so both factors stay positive.

Inverse: closed form. f moves z along the ray from z₀, so ||f(z) - z₀|| = r (1 + β / (α + r)) =: ρ,
a quadratic in r: r² + (α + β - ρ) r - α ρ = 0, whose non-negative root is r; then
z = z₀ + (y - z₀) / (1 + β h(r)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from glow.flows.base import Flow
from glow.flows.vector import ParameterSource


class Radial(Flow):
    def __init__(self, dim: int, cond_dim: int = 0):
        super().__init__()
        self.dim = dim
        self.source = ParameterSource(dim + 2, cond_dim, init_std=0.1 if not cond_dim else 0.01)

    def parameters_for(self, z: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(z₀ [B, D], α [B, 1] > 0, β [B, 1] > -α)."""
        raw = self.source(z.shape[0], cond, z)
        z0, alpha_raw, beta_raw = raw[:, :self.dim], raw[:, self.dim:self.dim + 1], raw[:, self.dim + 1:]
        alpha = F.softplus(alpha_raw)
        return z0, alpha, -alpha + F.softplus(beta_raw)

    def _logdet(self, r: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        h = 1 / (alpha + r)
        # 1 + βh + βh'r = 1 + βα/(α + r)²: written this way it cannot cancel to a negative number
        return ((self.dim - 1) * torch.log1p(beta * h) + torch.log1p(beta * alpha * h * h)).squeeze(-1)

    def forward(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z0, alpha, beta = self.parameters_for(z, cond)
        diff = z - z0
        r = diff.norm(dim=-1, keepdim=True)
        return z + beta / (alpha + r) * diff, self._logdet(r, alpha, beta)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z0, alpha, beta = self.parameters_for(y, cond)
        diff = y - z0
        rho = diff.norm(dim=-1, keepdim=True)
        c = alpha + beta - rho
        root = torch.sqrt(c * c + 4 * alpha * rho)
        # the same root written two ways, each free of cancellation on its side of c = 0
        r = torch.where(c > 0, 2 * alpha * rho / (c + root).clamp_min(torch.finfo(y.dtype).tiny), (root - c) / 2)
        x = z0 + diff / (1 + beta / (alpha + r))
        return x, -self._logdet(r, alpha, beta)
