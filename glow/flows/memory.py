"""Memory modes for a sequence of flow steps: what backward keeps, and how it gets the rest back.

* ``none``: plain autograd; every step's activations are kept, so memory grows with depth K.
* ``checkpoint``: torch.utils.checkpoint per flow step (actnorm, permutation, coupling): only each
  step's input is kept and the step is re-run in backward. Still O(K) tensors, each one small.
* ``invertible``: ``InvertibleBlock``, an autograd Function over the whole sequence that keeps only
  its OUTPUT (keeping every step's output would still be O(K): each is the next step's input). In
  backward it walks the steps backwards: the step's input is recomputed from its output through the
  exact inverse (no grad), the step is re-run forwards with grad on that input, and the gradient is
  carried on to the previous step. Activation memory is then flat in K. A layer may do the inverse
  and the re-run in one pass (``recompute``: Coupling evaluates its network once instead of twice).
  Backward takes the layers in ``Segment``s, one torch.autograd.grad call each: a coupling with the
  next step's ActNorm and 1x1 conv, so a Glow level of K steps costs K + 1 calls, not 3K.

The block is generic over any Flow (``forward/inverse(x, cond) -> (y, logdet)``), conditional layers
included: gradients are returned for the input, for ``cond`` (the condition encoder's features
require grad when it is trained) and for every parameter, which is passed to the Function as an
input so that autograd's ordinary gradient accumulation (and DDP's hooks on it) sees them.

Autocast: backward re-enters the autocast state the forward ran under, so a recomputed coupling
network sees the forward's input and precision; the parts that must be exact (W^-1, logdets) switch
autocast off themselves (glow.flows.base). Inversion is exact only in exact arithmetic: float32
roundoff makes the recomputed inputs drift by ~1e-6, and under bf16 such a drift now and then flips
how a network input rounds to bf16, so bf16 drifts more. ``inversion_drift`` measures it
(scripts/inversion_drift.py; docs/performance.md).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from glow.flows.base import Flow, FlowSequence, zeros_logdet

MEMORY_MODES = ("none", "checkpoint", "invertible")


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


class Segment(NamedTuple):
    """Layers that backward recomputes with ONE torch.autograd.grad call: a layer with its own
    ``recompute`` (a coupling) and the layers without one that follow it (the next step's ActNorm and
    1x1 conv), or a leading run of layers without one. Backward inverts the tail without grad, lets
    the head rebuild its graph (``recompute``), and re-runs the tail forwards on the head's output, so
    one graph spans the segment. Why: each call costs Python and engine set-up of the order of a small
    layer's own work, and a Glow level has 3K layers (docs/performance.md: K=32, h=64, batch 16,
    one call per layer against one per step)."""

    layers: tuple[Flow, ...]
    params: tuple[nn.Parameter, ...]


def segments_of(layers: Sequence[Flow]) -> list[Segment]:
    groups: list[list[Flow]] = []
    for layer in layers:
        if hasattr(layer, "recompute") or not groups:
            groups.append([layer])
        else:
            groups[-1].append(layer)
    # dict.fromkeys: a parameter shared by two layers of a segment gets its gradient once
    return [Segment(tuple(g), tuple(dict.fromkeys(p for layer in g for p in layer.parameters()))) for g in groups]


class InvertibleBlock(torch.autograd.Function):
    """(segments, x, cond, *params) -> (y, logdet); saves y and cond only. ``params`` are the
    segments' parameters that require grad, in segment order."""

    @staticmethod
    def forward(ctx, segments: Sequence[Segment], x: Tensor, cond: Tensor | None, *params: Tensor):
        ctx.segments = segments
        ctx.autocast = _autocast_state(x.device.type)
        # runs without grad (autograd.Function.forward always does): nothing inside is kept
        total = zeros_logdet(x)
        for segment in segments:
            for layer in segment.layers:
                x, logdet = layer(x, cond)
                total = total + logdet
        ctx.save_for_backward(x, cond)
        ctx.num_params = len(params)
        return x, total

    @staticmethod
    def backward(ctx, grad_y: Tensor, grad_logdet: Tensor):
        y, cond = ctx.saved_tensors
        enabled, dtype = ctx.autocast
        param_grads: list[Tensor | None] = [None] * ctx.num_params
        end = ctx.num_params  # the segments' parameters fill params back to front as backward walks
        cond_grad = None
        want_cond = cond is not None and ctx.needs_input_grad[2]
        with torch.autocast(y.device.type, dtype=dtype, enabled=enabled):
            for segment in reversed(ctx.segments):
                params = [p for p in segment.params if p.requires_grad]
                local_cond = cond.detach().requires_grad_(True) if want_cond else cond
                with torch.enable_grad():
                    x, leaves, to_input_grad, y_local, logdet = _recompute(segment.layers, y, local_cond)
                    inputs = leaves + ([local_cond] if want_cond else []) + params
                    # a volume-preserving segment's logdet is a constant with no graph: leave it out
                    pairs = [(o, g) for o, g in ((y_local, grad_y), (logdet, grad_logdet)) if o.requires_grad]
                    grads = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs],
                                                allow_unused=True)
                n = len(leaves)
                grad_y = to_input_grad(*[torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)])
                if want_cond and grads[n] is not None:
                    cond_grad = grads[n] if cond_grad is None else cond_grad + grads[n]
                end -= len(params)
                param_grads[end:end + len(params)] = grads[n + want_cond:]
                y = x.detach()
        return (None, grad_y, cond_grad, *param_grads)


def _recompute(layers: Sequence[Flow], y: Tensor, cond: Tensor | None):
    """(x, leaves, leaf grads -> grad of x, the segment's forward output and logdet rebuilt with grad).

    The head may offer ``recompute``, which inverts it and rebuilds its graph in one pass (Coupling:
    one network evaluation); otherwise the head is inverted without grad and re-run on a leaf. The
    tail (every later layer) is inverted without grad first and re-run on the head's output.
    """
    head, tail = layers[0], layers[1:]
    with torch.no_grad():
        for layer in reversed(tail):
            y, _ = layer.inverse(y, cond)
    if hasattr(head, "recompute"):
        x, leaves, to_input_grad, y_local, logdet = head.recompute(y, cond)
    else:
        with torch.no_grad():
            x, _ = head.inverse(y, cond)
        leaf = x.detach().requires_grad_(True)
        (y_local, logdet), leaves, to_input_grad = head(leaf, cond), [leaf], lambda g: g
    for layer in tail:
        y_local, layer_logdet = layer(y_local, cond)
        logdet = logdet + layer_logdet
    return x, leaves, to_input_grad, y_local, logdet


class MemoryFlowSequence(FlowSequence):
    """A FlowSequence (same state_dict keys) whose training forward follows a memory mode.

    ``step_size`` layers make one flow step (the unit torch.utils.checkpoint wraps). The plain path
    is taken whenever nothing needs a gradient, and always while an ActNorm data-dependent init is
    pending (that init must see the plain forward and write its parameters once).
    """

    def __init__(self, layers, memory: str = "none", step_size: int = 1):
        super().__init__(layers)
        if memory not in MEMORY_MODES:
            raise ValueError(f"model.memory={memory!r} is not allowed: use one of {', '.join(MEMORY_MODES)}")
        self.memory = memory
        self.step_size = step_size
        self._actnorms: list[nn.Module] | None = None
        self._segments: list[Segment] | None = None  # found once, like _actnorms

    def _apply(self, fn, *args, **kwargs):
        self._segments = None  # .to() may replace the Parameter objects the segments hold
        return super()._apply(fn, *args, **kwargs)

    def _plain(self, x: Tensor, cond: Tensor | None) -> bool:
        if self.memory == "none" or not torch.is_grad_enabled():
            return True
        if self._actnorms is None:  # found once: walking every module on every step costs time on a GPU
            self._actnorms = [m for m in self.modules() if hasattr(m, "init_pending")]
        if any(m.init_pending for m in self._actnorms):
            return True
        needs_grad = x.requires_grad or (cond is not None and cond.requires_grad)
        return not needs_grad and not any(p.requires_grad for p in self.parameters())

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self._plain(x, cond):
            return super().forward(x, cond)
        if self.memory == "invertible":
            if self._segments is None:
                self._segments = segments_of(self.layers)
            params = [p for segment in self._segments for p in segment.params if p.requires_grad]
            return InvertibleBlock.apply(self._segments, x, cond, *params)
        total = zeros_logdet(x)
        for start in range(0, len(self.layers), self.step_size):
            step = self.layers[start:start + self.step_size]
            x, logdet = checkpoint(_run_layers, step, x, cond, use_reentrant=False)
            total = total + logdet
        return x, total


def _run_layers(layers: nn.ModuleList, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
    total = zeros_logdet(x)
    for layer in layers:
        x, logdet = layer(x, cond)
        total = total + logdet
    return x, total


@torch.no_grad()
def inversion_drift(flow: FlowSequence, x: Tensor, cond: Tensor | None = None) -> float:
    """max |x_recomputed - x| over every step input of ``flow``, with the inputs recomputed from the
    block's output by repeated inversion, exactly as InvertibleBlock's backward does."""
    inputs = []
    for layer in flow.layers:
        inputs.append(x)
        x, _ = layer(x, cond)
    worst = 0.0
    for layer, true_input in zip(reversed(flow.layers), reversed(inputs)):
        x, _ = layer.inverse(x, cond)
        worst = max(worst, float((x.float() - true_input.float()).abs().max()))
    return worst
