"""Masked autoregressive flow layer (Papamakarios et al. 2017): density in one pass, sampling sequential.

    forward (data -> noise, one MADE pass):   u_i = (x_i - μ_i(x_<i)) exp(-α_i(x_<i))   log|det| = -Σ α_i
    inverse (noise -> data, D MADE passes):   x_i = u_i exp(α_i(x_<i)) + μ_i(x_<i)

"<i" is "before i in the layer's order". The log-scale is soft-bounded, α = 3 tanh(raw / 3) (the
repository's affine_scale=tanh), so one layer scales by at most e³ either way.

IAF (glow.flows.iaf) is the mirror image: the one-pass direction is sampling.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glow.flows.base import Flow, logdet_dtype
from glow.flows.made import MADE


def shift_and_log_scale(made: MADE, v: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
    out = made(v, cond)
    return out[:, 0], 3 * torch.tanh(out[:, 1] / 3)


class MAF(Flow):
    def __init__(self, dim: int, hidden: int, order: Tensor, hidden_layers: int = 2, cond_dim: int = 0):
        super().__init__()
        self.made = MADE(dim, hidden, order, 2, hidden_layers, cond_dim)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mu, alpha = shift_and_log_scale(self.made, x, cond)
        return (x - mu) * torch.exp(-alpha), -alpha.to(logdet_dtype(x)).sum(-1)

    def inverse(self, u: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """D passes: after pass k the first k dimensions of the order are exact."""
        x = torch.zeros_like(u)
        for _ in range(self.made.dim):
            mu, alpha = shift_and_log_scale(self.made, x, cond)
            x = u * torch.exp(alpha) + mu
        return x, alpha.to(logdet_dtype(u)).sum(-1)
