"""MADE (Germain et al. 2015): a masked MLP whose output for dimension i sees only the inputs before i
in ``order``, so a flow built on it has a triangular Jacobian in that order.

Masks are built once, in __init__, and stored as buffers. Degrees: input i has degree
rank(i) in ``order`` (1..D); hidden units cycle through 1..D-1;
a hidden unit of degree k sees inputs of degree <= k, an output of dimension i sees hidden units of
degree < rank(i). An optional condition vector enters the first hidden layer unmasked (it does not
break the autoregressive property). The output layer starts at zero: a flow built on a fresh MADE
is the identity.

``orders(dim, count, kind, seed)`` gives the layers' orders: "alternating" (natural, reversed, natural,
...) or "random" (a seeded permutation per layer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glow.flows.vector import group_size

ORDERS = ("alternating", "random")


def orders(dim: int, count: int, kind: str = "alternating", seed: int = 0) -> list[Tensor]:
    if kind not in ORDERS:
        raise ValueError(f"model.order={kind!r} is not allowed: use one of {', '.join(ORDERS)}")
    if kind == "alternating":
        natural = torch.arange(dim)
        return [natural if k % 2 == 0 else natural.flip(0) for k in range(count)]
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(dim, generator=generator) for _ in range(count)]


class MaskedLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, mask: Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.float())

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask.to(self.weight.dtype), self.bias)


class MADE(nn.Module):
    def __init__(self, dim: int, hidden: int, order: Tensor, outputs_per_dim: int = 2, hidden_layers: int = 2,
                 cond_dim: int = 0):
        super().__init__()
        if dim < 2:
            raise ValueError(f"MADE needs at least 2 dimensions, got {dim}")
        order = torch.as_tensor(order).long()
        if not order.is_meta and sorted(order.tolist()) != list(range(dim)):  # meta: sizing only (glow.sampling.load)
            raise ValueError(f"order must be a permutation of 0..{dim - 1}")
        self.dim, self.outputs_per_dim = dim, outputs_per_dim
        self.register_buffer("order", order)
        degree_in = torch.empty(dim, dtype=torch.long)
        degree_in[order] = torch.arange(1, dim + 1)  # rank of each input dimension in the order
        degree_hidden = torch.arange(hidden) % (dim - 1) + 1
        layers, previous = [], degree_in
        for k in range(hidden_layers):
            mask = degree_hidden[:, None] >= previous[None, :]
            layers.append(MaskedLinear(dim if k == 0 else hidden, hidden, mask))
            previous = degree_hidden
        self.hidden = nn.ModuleList(layers)
        out_degree = degree_in.repeat(outputs_per_dim)  # output j * D + i belongs to dimension i
        self.out = MaskedLinear(hidden, dim * outputs_per_dim, out_degree[:, None] > previous[None, :])
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.cond = nn.Linear(cond_dim, hidden) if cond_dim else None

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """-> [B, outputs_per_dim, D]: output [:, j, i] depends on x[order[:rank(i)-1]] (and cond) only."""
        h = self.hidden[0](x)
        if self.cond is not None:
            if cond is None:
                raise ValueError("this MADE is conditional (cond_dim > 0): pass cond")
            # cond may have one row per group of consecutive samples (glow.flows.vector.ParameterSource)
            h = h + self.cond(cond.to(h.dtype)).repeat_interleave(group_size(x.shape[0], cond), 0)
        h = F.relu(h)
        for layer in self.hidden[1:]:
            h = F.relu(layer(h))
        return self.out(h).view(x.shape[0], self.outputs_per_dim, self.dim)
