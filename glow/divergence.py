"""Divergence guard: after ``max_nonfinite_steps`` consecutive non-finite steps, roll the model, EMA and
optimiser back to the last good state kept in memory and halve the learning rate; after
``max_rollbacks`` rollbacks, restore the last good state once more and stop the run.

Why in memory: a diverged run must not have to find, trust and re-read a file; the snapshot is a
CPU copy taken every ``max_nonfinite_steps`` finite steps, so it predates the blow-up.
"""

from __future__ import annotations

import copy

import torch


class Diverged(RuntimeError):
    """The run kept producing non-finite steps after every rollback."""


def _cpu_copy(state):
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: _cpu_copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu_copy(v) for v in state)
    return copy.deepcopy(state)


class DivergenceGuard:
    def __init__(self, max_nonfinite_steps: int = 20, max_rollbacks: int = 3):
        self.max_nonfinite_steps, self.max_rollbacks = max_nonfinite_steps, max_rollbacks
        self.consecutive = 0
        self.rollbacks = 0
        self.diverged = False
        self._snapshot: dict | None = None
        self._finite_since_snapshot = 0

    def snapshot(self, module, optimizer) -> None:
        self._snapshot = {"module": _cpu_copy(module.state_dict()), "optimizer": _cpu_copy(optimizer.state_dict())}
        self._finite_since_snapshot = 0

    def after_step(self, module, optimizer, finite: bool) -> str | None:
        """Called once per optimiser step; returns a message when it rolled back or gave up."""
        if finite:
            self.consecutive = 0
            self._finite_since_snapshot += 1
            if self._snapshot is None or self._finite_since_snapshot >= self.max_nonfinite_steps:
                self.snapshot(module, optimizer)
            return None
        self.consecutive += 1
        if self.consecutive < self.max_nonfinite_steps or self._snapshot is None:
            return None
        self.consecutive = 0
        self._restore(module, optimizer)
        if self.rollbacks >= self.max_rollbacks:
            self.diverged = True
            raise Diverged(f"training diverged: {self.max_nonfinite_steps} consecutive non-finite steps after "
                           f"{self.rollbacks} rollbacks with the learning rate halved each time; the last finite "
                           f"weights were restored. Lower module.lr or raise module.warmup_steps")
        self.rollbacks += 1
        lrs = []
        for scheduler in _schedulers(module):
            scheduler.base_lrs = [lr / 2 for lr in scheduler.base_lrs]
        for group in optimizer.param_groups:
            group["lr"] /= 2
            lrs.append(group["lr"])
        return (f"step {module.global_step}: {self.max_nonfinite_steps} consecutive non-finite steps; rolled back "
                f"to the last finite state and halved the learning rate to {lrs[0]:.3g} "
                f"(rollback {self.rollbacks} of {self.max_rollbacks})")

    def _restore(self, module, optimizer) -> None:
        state = self._snapshot
        module.load_state_dict(state["module"])
        # the optimiser's lr is kept (halved below), its moments come back from the snapshot
        lrs = [g["lr"] for g in optimizer.param_groups]
        optimizer.load_state_dict(state["optimizer"])
        for group, lr in zip(optimizer.param_groups, lrs):
            group["lr"] = lr


def _schedulers(module) -> list:
    try:
        schedulers = module.lr_schedulers()
    except (AttributeError, RuntimeError):
        return []
    if schedulers is None:
        return []
    return schedulers if isinstance(schedulers, list) else [schedulers]
