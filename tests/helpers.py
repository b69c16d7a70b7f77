"""Brute-force checks shared by the exactness tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def perturb(module: nn.Module, scale: float = 0.1, seed: int = 0) -> nn.Module:
    """Move every parameter away from its identity-like initialisation, so the tests test something."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    for m in module.modules():  # mark ActNorms initialised so nothing re-initialises behind the test's back
        if hasattr(m, "initialized"):
            m.initialized.fill_(True)
    return module


def jacobian_logdet(fn, x: Tensor) -> Tensor:
    """log|det J| of fn at each sample of x, by autograd (float64); fn maps [B, ...] -> [B, ...] per sample."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]

        def flat(v: Tensor) -> Tensor:
            return fn(v.view_as(xi)).reshape(-1)

        jac = torch.autograd.functional.jacobian(flat, xi.reshape(-1))
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)
