"""The learning-rate schedule and the run's step plan.

The learning rate warms up linearly over ``warmup_steps`` (Glow: without it Glow often NaNs at the start),
then stays constant (Glow's own schedule) or decays to 0 at the run's planned last step (``cosine``,
``linear``). The plan is ``trainer.max_steps``; with ``trainer.max_time`` it is the number of steps that
fit in the time budget, estimated once from the measured rate of the first ``measure_seconds`` of
training (``TimeBudget``), so the schedule reaches 0 when the budget ends. The plan is saved in the
checkpoint: a resumed run keeps its schedule, whatever the machine's speed now.
"""

from __future__ import annotations

import math
import time

import lightning as L
from lightning.pytorch.callbacks import Timer

LR_SCHEDULES = ("constant", "cosine", "linear")


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warmup from lr/warmup to lr."""
    return min(1.0, (step + 1) / max(1, warmup_steps))


def lr_factor(step: int, warmup_steps: int, schedule: str, planned_steps: int | None) -> float:
    """The learning rate at ``step`` as a fraction of module.lr."""
    factor = warmup_factor(step, warmup_steps)
    if schedule == "constant" or not planned_steps:
        return factor
    progress = min(1.0, max(0, step + 1 - warmup_steps) / max(1, planned_steps - warmup_steps))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return factor * decay


class TimeBudget(L.Callback):
    """With trainer.max_time: plans the run's last step from the measured speed, and stops there.

    The rate is measured over training steps from ``skip_steps`` (compilation, caches, the first
    validation) until ``measure_seconds`` of training have passed, validation included, so its share
    is in the estimate; the plan keeps ``margin`` of the remaining time free for slower minutes.
    Lightning's own Timer still stops the run at max_time whatever happens.
    """

    def __init__(self, measure_seconds: float = 60.0, skip_steps: int = 10, margin: float = 0.03):
        self.measure_seconds, self.skip_steps, self.margin = measure_seconds, skip_steps, margin
        self._start: tuple[int, float] | None = None

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if module.planned_steps is not None and step >= module.planned_steps:
            trainer.should_stop = True
            return
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is None or module.plan_measured or timer.time_remaining("train") is None:
            return
        now = time.perf_counter()
        if self._start is None:
            if step >= self.skip_steps:
                self._start = (step, now)
            return
        first_step, started = self._start
        if now - started < self.measure_seconds:
            return
        rate = (step - first_step) / (now - started)
        remaining = timer.time_remaining("train") * (1 - self.margin)
        planned = step + int(rate * remaining)
        module.set_plan(min(planned, trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else planned,
                        measured=True)
        module.print(f"time budget: {rate:.2f} steps/s over the first {now - started:.0f} s of training; "
                     f"the run will stop at step {module.planned_steps} (learning rate decaying to 0 there)")
