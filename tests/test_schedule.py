"""The learning-rate schedule and the time budget's step plan (glow.schedule)."""

from __future__ import annotations

import math

import pytest
from lightning.pytorch.callbacks import Timer

import glow.schedule as schedule
from glow.module import DensityModule
from glow.schedule import TimeBudget, lr_factor

TINY = {"levels": 2, "steps": 1, "hidden_channels": 4, "image_shape": [1, 8, 8]}


def test_warmup_then_each_schedule():
    assert [lr_factor(s, 4, "constant", 100) for s in (0, 1, 3, 50, 99)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    # cosine: 1 right after warmup, 1/2 half-way through the rest, 0 at the planned last step
    assert lr_factor(3, 4, "cosine", 104) == 1.0
    assert lr_factor(53, 4, "cosine", 104) == pytest.approx(0.5, abs=1e-12)
    assert lr_factor(103, 4, "cosine", 104) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(500, 4, "cosine", 104) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(28, 4, "linear", 104) == pytest.approx(0.75)
    assert lr_factor(28, 4, "cosine", 104) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr_factor(50, 4, "cosine", None) == 1.0  # no plan yet: the peak


class FakeTimer(Timer):
    def __init__(self, remaining: float):
        super().__init__(duration="00:00:10:00")
        self.remaining = remaining

    def time_remaining(self, stage="train"):
        return self.remaining


class FakeTrainer:
    def __init__(self, remaining: float, max_steps: int):
        self.callbacks, self.max_steps, self.global_step, self.should_stop = [FakeTimer(remaining)], max_steps, 0, False


def test_time_budget_plans_from_the_measured_rate_and_stops_there(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(schedule.time, "perf_counter", lambda: clock[0])
    module = DensityModule(TINY)
    module.print = lambda *a, **k: None
    budget = TimeBudget(measure_seconds=60, skip_steps=10, margin=0.0)
    trainer = FakeTrainer(remaining=600.0, max_steps=100_000)
    for step in range(1, 200):  # 2 steps per second after the first ten
        trainer.global_step, clock[0] = step, step / 2
        budget.on_train_batch_end(trainer, module, None, None, step)
        if module.plan_measured:
            break
    # measured from step 10 (t=5 s) to step 130 (t=65 s): 2 steps/s; 600 s remain -> 1200 more steps
    assert module.plan_measured and trainer.global_step == 130 and module.planned_steps == 130 + 1200
    trainer.global_step = module.planned_steps - 1
    budget.on_train_batch_end(trainer, module, None, None, 0)
    assert not trainer.should_stop
    trainer.global_step = module.planned_steps
    budget.on_train_batch_end(trainer, module, None, None, 0)
    assert trainer.should_stop


def test_the_plan_never_exceeds_max_steps(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(schedule.time, "perf_counter", lambda: clock[0])
    module = DensityModule(TINY)
    module.print = lambda *a, **k: None
    budget, trainer = TimeBudget(measure_seconds=1, skip_steps=0), FakeTrainer(remaining=1e6, max_steps=500)
    for step in range(1, 20):
        trainer.global_step, clock[0] = step, float(step)
        budget.on_train_batch_end(trainer, module, None, None, step)
    assert module.planned_steps == 500


def test_a_measured_plan_survives_a_resume_and_max_steps_is_read_anew_otherwise():
    module = DensityModule(TINY)
    module.set_plan(1234, measured=True)
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    resumed = DensityModule(TINY)
    resumed.on_load_checkpoint(checkpoint)
    assert (resumed.planned_steps, resumed.plan_measured) == (1234, True)
    module.set_plan(1000, measured=False)  # a max_steps plan: the resumed run's own max_steps decides
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    resumed = DensityModule(TINY)
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.planned_steps is None and not resumed.plan_measured
    for bad in ({"planned_steps": "1e9", "measured": True}, {"planned_steps": -5, "measured": True}, "junk"):
        stranger = DensityModule(TINY)
        stranger.on_load_checkpoint({"step_plan": bad})  # a checkpoint's contents are a stranger's data
        assert stranger.planned_steps is None


def test_bad_schedule_is_one_line():
    with pytest.raises(ValueError, match="module.lr_schedule='step' is not allowed: use one of constant, cosine, linear"):
        DensityModule(TINY, lr_schedule="step")
