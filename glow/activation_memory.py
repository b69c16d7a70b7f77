"""Activation memory without a GPU: the bytes autograd keeps for backward.

``saved_tensor_bytes`` runs a function under ``torch.autograd.graph.saved_tensors_hooks`` and adds up
the storages of every tensor saved for backward, each storage counted once (a view and its base, or
one tensor saved by two ops, share storage). The model's own parameters and buffers are left out:
they exist whatever the memory mode, so they are not activation memory. On a GPU the benchmark uses
``torch.cuda.max_memory_allocated`` instead; the two are different measures, and each row says which.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

METHOD = "saved_tensors_hooks: bytes saved for backward, storages deduplicated, parameters excluded"


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    storage = t.untyped_storage()
    return str(t.device), storage.data_ptr()


def saved_tensor_bytes(fn: Callable[[], torch.Tensor], model: nn.Module | None = None) -> tuple[torch.Tensor, int]:
    """(fn's result, bytes of distinct storages autograd saved while computing it)."""
    exclude = set()
    if model is not None:
        exclude = {_storage_key(t) for t in [*model.parameters(), *model.buffers()]}
    seen: dict[tuple[str, int], int] = {}

    def pack(t: torch.Tensor):
        key = _storage_key(t)
        if key not in exclude and t.untyped_storage().data_ptr() != 0:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return result, sum(seen.values())
