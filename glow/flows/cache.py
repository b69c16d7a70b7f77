"""The no-grad cache: values derived from a module's tensors, kept while those tensors are unchanged.

Where no gradient is wanted (sampling, evaluation, and model.memory=invertible's no-grad forward and
inversion) a layer may reuse what it derived from its weights (the coupling network's folded weights,
the 1x1 conv's W, W^-1 and log|det W|) instead of deriving it again on every call. An entry lives until
one of its tensors changes: an optimiser step, load_state_dict or any in-place edit bumps a tensor's
version; .to(), .double() or load_state_dict(assign=True) gives it new storage or a new dtype.

The cache steps aside (the caller computes afresh) where a gradient is wanted through one of the
tensors, and under torch.compile, where the data-pointer key would break the graph (inductor fuses the
ops anyway). It lives in the owner's ``__dict__``: no state_dict entry, and nn.Module's attribute
machinery is bypassed (the key is read on every call of small layers, so it must be cheap).
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

import torch
from torch import Tensor, nn


def _key(tensors: Sequence[Tensor]) -> tuple:
    return tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in tensors)


def no_grad_entries(owner: nn.Module, slot: str, tensors: Sequence[Tensor]) -> dict | None:
    """The entries cached in ``owner``'s ``slot``, valid for ``tensors`` as they are now (emptied when
    one changed), or None where the cache steps aside: a gradient is wanted, or torch.compile traces."""
    if torch.compiler.is_compiling():
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    key = _key(tensors)
    stored = owner.__dict__.get(slot)
    if stored is None or stored[0] != key:
        stored = (key, {})
        owner.__dict__[slot] = stored
    return stored[1]


def cached(owner: nn.Module, slot: str, tensors: Sequence[Tensor], make: Callable[[], Tensor | tuple],
           entry: Hashable = None):
    """``make()``, or where the cache applies (see no_grad_entries) its value made once, without a
    graph, and kept under ``entry`` in ``owner``'s ``slot`` until one of ``tensors`` changes."""
    entries = no_grad_entries(owner, slot, tensors)
    if entries is None:
        return make()
    if entry not in entries:
        with torch.no_grad():
            entries[entry] = make()
    return entries[entry]
