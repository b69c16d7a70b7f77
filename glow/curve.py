"""Learning curves: the test bits/dim at fixed training steps, measured inside one training run.

``TestCurve`` is a Lightning callback (add it with ``+callbacks.curve._target_=glow.curve.TestCurve``);
at each step of ``eval_steps`` it evaluates the whole test split with the same ``DensityModule.evaluate``
as ``trainer.test`` (EMA weights if on, the same dequantisation noise stream) and appends a row
``{"step", "test_bpd", "test_nonfinite", "test_images", "seconds"}`` to a JSON-lines file, so a
crash loses nothing already measured. ``seconds`` is the training wall time, evaluation excluded.
Single-process only: under DDP each rank would evaluate the whole split.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import lightning as L
import torch


class TestCurve(L.Callback):
    def __init__(self, eval_steps, output: str):
        steps = sorted({int(s) for s in eval_steps})
        if not steps or steps[0] < 1:
            raise ValueError(f"callbacks.curve.eval_steps={list(eval_steps)!r} is not allowed: use positive steps")
        self.eval_steps, self.output = steps, Path(output)
        self._train_seconds, self._started, self._done = 0.0, None, set()

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if self._started is not None:
            self._train_seconds += time.perf_counter() - self._started
            self._started = None
        step = trainer.global_step
        if step in self.eval_steps and step not in self._done and trainer.world_size == 1:
            self._done.add(step)
            self._write(dict(step=step, **self.evaluate(trainer, module), seconds=round(self._train_seconds, 2)))

    @staticmethod
    @torch.no_grad()
    def evaluate(trainer: L.Trainer, module) -> dict:
        model = module.eval_model
        was_training = model.training
        model.eval()
        total, count, nonfinite = 0.0, 0, 0
        try:
            for batch_idx, (images, labels) in enumerate(trainer.datamodule.test_dataloader()):
                batch = (images.to(module.device), labels.to(module.device))
                bpd = module.evaluate(batch, batch_idx)["bpd"]
                finite = torch.isfinite(bpd)
                nonfinite += int((~finite).sum())
                total += float(bpd[finite].double().sum())
                count += bpd.shape[0]
        finally:
            model.train(was_training)
        # a non-finite image makes the mean undefined: report null and the count, never a NaN
        mean = total / count if count and not nonfinite else None
        return {"test_bpd": mean if mean is None or math.isfinite(mean) else None,
                "test_nonfinite": nonfinite, "test_images": count}

    def _write(self, row: dict) -> None:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        with self.output.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def state_dict(self) -> dict:
        return {"done": sorted(self._done), "train_seconds": self._train_seconds}

    def load_state_dict(self, state: dict) -> None:
        self._done = {int(s) for s in state.get("done", [])}
        self._train_seconds = float(state.get("train_seconds", 0.0))
