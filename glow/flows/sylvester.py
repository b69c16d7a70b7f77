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

from typing import Callable

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
        # flat positions of the strictly upper entries: the head outputs only these (the paper amortises
        # all M² and masks half away; those outputs never get a gradient, and they cost half the head)
        upper = torch.triu_indices(m, m, offset=1)
        self.register_buffer("upper", upper[0] * m + upper[1], persistent=False)
        off = m * (m - 1) // 2
        self.counts = [off, off, m, m, m, q_count]  # R off-diag, R̃ off-diag, R diag, R̃ diag, b, Q raw
        self.source = ParameterSource(sum(self.counts), cond_dim, init_std=0.01 if cond_dim else 0.1)
        if kind == "orthogonal" and not cond_dim:  # a random start: QR of a near-zero matrix is still orthonormal
            with torch.no_grad():
                self.source.raw[-q_count:].normal_()

    def _q_products(self, raw: Tensor, groups: int) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """(x -> x Q, x -> x Qᵀ) for row vectors x [G, S, ·], Q built once per group (not per sample).

        Householder: Q = H_1 ... H_K is never formed; each reflection acts on the vectors directly,
        x H = x - 2 (x·v) vᵀ, O(S D) per reflection instead of the O(D²) of a matrix product (the
        D x D matrices per sample made sylvester_h the slowest posterior). Triangular: Q is the
        identity or the reversal, so a flip (or nothing) replaces the matrix product.
        """
        if self.kind == "orthogonal":
            q, r = torch.linalg.qr(raw.view(groups, self.dim, self.m))
            # fix the signs (QR is unique up to them) so Q depends smoothly on raw
            sign = torch.where(torch.diagonal(r, dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(raw.dtype)
            q = q * sign.unsqueeze(-2)
            return (lambda x: x @ q), (lambda x: x @ q.transpose(-1, -2))
        if self.kind == "householder":
            v = raw.view(groups, self.householder, self.dim)
            v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)

            def reflect(x: Tensor, ks) -> Tensor:
                for k in ks:
                    vk = v[:, k:k + 1]  # [G, 1, D]
                    x = x - 2 * (x * vk).sum(-1, keepdim=True) * vk
                return x

            forward_order, backward_order = range(self.householder), range(self.householder - 1, -1, -1)
            return (lambda x: reflect(x, forward_order)), (lambda x: reflect(x, backward_order))
        flip = (lambda x: x.flip(-1)) if self.flip else (lambda x: x)  # the reversal is its own transpose
        return flip, flip

    def _upper_triangular(self, off: Tensor, diag: Tensor) -> Tensor:
        """[G, M, M] from the strictly upper entries [G, M(M-1)/2] and the diagonal [G, M]."""
        flat = off.new_zeros(off.shape[0], self.m * self.m).index_copy(1, self.upper, off)
        return flat.view(-1, self.m, self.m) + torch.diag_embed(diag)

    def forward(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = z.shape[0]
        raw, size = self.source.grouped(batch, cond, z)  # one parameter row per group of `size` samples
        groups = raw.shape[0]
        r_off, rt_off, r_diag, rt_diag, b, q_raw = raw.split(self.counts, dim=-1)
        r_diag, rt_diag = torch.tanh(r_diag), torch.tanh(rt_diag)
        r, rt = self._upper_triangular(r_off, r_diag), self._upper_triangular(rt_off, rt_diag)
        times_q, times_qt = self._q_products(q_raw, groups)
        zg = z.view(groups, size, self.dim)
        # row-vector form: (R̃ Qᵀ z + b)ᵀ = zᵀ Q R̃ᵀ + bᵀ and (Q R h)ᵀ = hᵀ Rᵀ Qᵀ
        h = torch.tanh(times_q(zg) @ rt.transpose(-1, -2) + b[:, None])
        y = zg + times_qt(h @ r.transpose(-1, -2))
        logdet = torch.log(torch.abs(1 + (r_diag * rt_diag)[:, None] * (1 - h * h))).sum(-1)
        return y.reshape(batch, self.dim), logdet.reshape(batch)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError("Sylvester flows have no closed-form inverse (and a VAE posterior needs none)")
