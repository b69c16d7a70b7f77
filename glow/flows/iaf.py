"""Inverse autoregressive flow layer (Kingma et al. 2016): sampling in one pass, density sequential.

    forward (noise -> data, one MADE pass):   x_i = u_i exp(α_i(u_<i)) + μ_i(u_<i)    log|det| = Σ α_i
    inverse (data -> noise, D MADE passes):   u_i = (x_i - μ_i(u_<i)) exp(-α_i(u_<i))

Note the direction: an IAF layer's forward is the sampling direction (as a VAE posterior uses it, and
as an IAF density model samples); MAF's forward is the density direction. α = 3 tanh(raw / 3), as in MAF.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glow.flows.base import Flow, logdet_dtype
from glow.flows.made import MADE
from glow.flows.maf import shift_and_log_scale


class IAF(Flow):
    def __init__(self, dim: int, hidden: int, order: Tensor, hidden_layers: int = 2, cond_dim: int = 0):
        super().__init__()
        self.made = MADE(dim, hidden, order, 2, hidden_layers, cond_dim)

    def forward(self, u: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mu, alpha = shift_and_log_scale(self.made, u, cond)
        return u * torch.exp(alpha) + mu, alpha.to(logdet_dtype(u)).sum(-1)

    def inverse(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """D passes: after pass k the first k dimensions of the order are exact."""
        u = torch.zeros_like(x)
        for _ in range(self.made.dim):
            mu, alpha = shift_and_log_scale(self.made, u, cond)
            u = (x - mu) * torch.exp(-alpha)
        return u, -alpha.to(logdet_dtype(x)).sum(-1)
