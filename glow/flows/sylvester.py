"""Sylvester flows (van den Berg et al. 2018):  f(z) = z + Q R tanh(R̃ Qᵀ z + b).

Q is D x M with orthonormal columns, R and R̃ are M x M upper triangular, so by Sylvester's determinant
identity

    log|det df/dz| = sum_i log|1 + R_ii R̃_ii tanh'((R̃ Qᵀ z + b)_i)|.

The diagonals are R_ii = tanh(raw), R̃_ii = tanh(raw), so |R_ii R̃_ii| <= 1 and, with 0 < tanh' <= 1,
every factor stays >= 0 (the paper's sufficient condition for invertibility).

Three ways to get Q (``kind``):
  orthogonal   M <= D columns: the Q factor of a QR decomposition of a raw D x M matrix (exactly orthonormal;
               the paper iterates Q <- Q (I + (I - QᵀQ)/2) to convergence, which QR replaces);
  householder  M = D: the product of ``householder`` reflections I - 2 v vᵀ / ||v||²;
  triangular   M = D: Q is the identity or (``flip``) the reversal permutation; alternate it between layers.

All parameters (R, R̃, b and Q's raw values) are amortised from ``cond`` (the encoder's features) when
``cond_dim > 0``, else free. No inverse: f has no closed-form inverse and the VAE posterior never needs
one, so ``inverse`` raises NotImplementedError.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glow.flows.base import Flow
from glow.flows.vector import ParameterSource

KINDS = ("orthogonal", "householder", "triangular")


class Sylvester(Flow):
    def __init__(self, dim: int, cond_dim: int = 0, kind: str = "orthogonal", num_columns: int | None = None,
                 householder: int = 4, flip: bool = False):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"Sylvester kind={kind!r} is not allowed: use one of {', '.join(KINDS)}")
        m = (num_columns or dim) if kind == "orthogonal" else dim
        if not 1 <= m <= dim:
            raise ValueError(f"Sylvester num_columns={num_columns!r} is not allowed: use 1..{dim}")
        self.dim, self.m, self.kind, self.householder, self.flip = dim, m, kind, householder, flip
        q_count = {"orthogonal": dim * m, "householder": householder * dim, "triangular": 0}[kind]
        self.register_buffer("triu", torch.triu(torch.ones(m, m), diagonal=1), persistent=False)
        self.counts = [m * m, m * m, m, m, m, q_count]  # R off-diag, R̃ off-diag, R diag, R̃ diag, b, Q raw
        self.source = ParameterSource(sum(self.counts), cond_dim, init_std=0.01 if cond_dim else 0.1)
        if kind == "orthogonal" and not cond_dim:  # a random start: QR of a near-zero matrix is still orthonormal
            with torch.no_grad():
                self.source.raw[-q_count:].normal_()

    def _q(self, raw: Tensor, batch: int) -> Tensor:
        if self.kind == "orthogonal":
            q, r = torch.linalg.qr(raw.view(batch, self.dim, self.m))
            # fix the signs (QR is unique up to them) so Q depends smoothly on raw
            sign = torch.where(torch.diagonal(r, dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(raw.dtype)
            return q * sign.unsqueeze(-2)
        if self.kind == "householder":
            q = torch.eye(self.dim, dtype=raw.dtype, device=raw.device).expand(batch, -1, -1)
            for v in raw.view(batch, self.householder, self.dim).unbind(1):
                v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                q = q - 2 * (q @ v.unsqueeze(-1)) * v.unsqueeze(-2)  # Q H with H = I - 2 v vᵀ
            return q
        eye = torch.eye(self.dim, dtype=raw.dtype, device=raw.device)
        return (eye.flip(-1) if self.flip else eye).expand(batch, -1, -1)

    def forward(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = z.shape[0]
        r_off, rt_off, r_diag, rt_diag, b, q_raw = self.source(batch, cond, z).split(self.counts, dim=-1)
        r_diag, rt_diag = torch.tanh(r_diag), torch.tanh(rt_diag)
        triu = self.triu.to(z.dtype)
        r = r_off.view(batch, self.m, self.m) * triu + torch.diag_embed(r_diag)
        rt = rt_off.view(batch, self.m, self.m) * triu + torch.diag_embed(rt_diag)
        q = self._q(q_raw, batch)
        pre = (rt @ (q.transpose(-1, -2) @ z.unsqueeze(-1))).squeeze(-1) + b
        h = torch.tanh(pre)
        y = z + (q @ (r @ h.unsqueeze(-1))).squeeze(-1)
        logdet = torch.log(torch.abs(1 + r_diag * rt_diag * (1 - h * h))).sum(-1)
        return y, logdet

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError("Sylvester flows have no closed-form inverse (and a VAE posterior needs none)")
