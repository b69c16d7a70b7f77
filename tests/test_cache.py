"""glow.flows.cache: a value derived from tensors is made once where no gradient is wanted, and never
outlives an in-place edit, an optimiser step, new storage or a dtype change of those tensors."""

from __future__ import annotations

import torch
from torch import nn

from glow.flows.cache import cached


def test_made_once_and_remade_after_every_change():
    owner = nn.Linear(3, 3)
    calls = []

    def square():
        calls.append(1)
        return owner.weight @ owner.weight

    def value():
        return cached(owner, "_square", (owner.weight,), square)

    with torch.no_grad():
        first = value()
        assert value() is first and len(calls) == 1
        owner.weight.add_(1.0)  # an in-place edit bumps the version
        assert torch.allclose(value(), owner.weight @ owner.weight) and len(calls) == 2
    owner.weight.grad = torch.ones_like(owner.weight)
    torch.optim.SGD(owner.parameters(), lr=0.1).step()
    with torch.no_grad():
        assert torch.allclose(value(), owner.weight @ owner.weight) and len(calls) == 3
        owner.load_state_dict(nn.Linear(3, 3).state_dict())
        assert torch.allclose(value(), owner.weight @ owner.weight) and len(calls) == 4
    owner.double()
    with torch.no_grad():
        assert value().dtype == torch.float64 and len(calls) == 5


def test_steps_aside_where_a_gradient_is_wanted():
    owner = nn.Linear(2, 2)
    made = cached(owner, "_w", (owner.weight,), lambda: owner.weight * 2)
    assert made.requires_grad and made.grad_fn is not None  # afresh, with its graph
    assert cached(owner, "_w", (owner.weight,), lambda: owner.weight * 2) is not made
    with torch.no_grad():
        frozen = cached(owner, "_w", (owner.weight,), lambda: owner.weight * 2)
    assert not frozen.requires_grad
