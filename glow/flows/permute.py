"""Fixed channel permutations: reverse (RealNVP) and a seeded random shuffle. log|det| = 0."""

from __future__ import annotations

import torch
from torch import Tensor

from glow.flows.base import Flow, zeros_logdet


class Permutation(Flow):
    def __init__(self, perm: Tensor):
        super().__init__()
        self.register_buffer("perm", perm.long())
        self.register_buffer("inv_perm", torch.argsort(perm).long())

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x[:, self.perm], zeros_logdet(x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y[:, self.inv_perm], zeros_logdet(y)


class Reverse(Permutation):
    def __init__(self, channels: int):
        super().__init__(torch.arange(channels - 1, -1, -1))


class Shuffle(Permutation):
    """A random permutation drawn from ``seed`` and stored as a buffer (so checkpoints carry it)."""

    def __init__(self, channels: int, seed: int = 0):
        super().__init__(torch.randperm(channels, generator=torch.Generator().manual_seed(seed)))
