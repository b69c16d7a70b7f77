"""Checkpoint callbacks that cannot be turned against the filesystem by a checkpoint's contents.

Lightning's ModelCheckpoint restores best/last/kth paths from the checkpoint it resumes from and
later deletes "the previous best"; it only checks ``file://`` paths against its folder. A crafted
checkpoint could thus make a run delete any file or directory. Here restored paths are kept only
when they lie inside this run's checkpoint folder, and removals are checked again (the
CheckpointIO in glow.checkpoints checks a third time).
"""

from __future__ import annotations

import math
import os
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from glow.checkpoints import inside


class SafeModelCheckpoint(ModelCheckpoint):
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        root = self.dirpath
        if root is None:  # nothing to check against: restore nothing
            return

        def ours(p: Any) -> bool:
            return isinstance(p, str) and p.endswith(".ckpt") and inside(p, root)

        dropped = [p for key in ("best_model_path", "kth_best_model_path", "last_model_path")
                   for p in [state_dict.get(key)] if p and not ours(p)]
        dropped = sorted(set(dropped + [p for p in (state_dict.get("best_k_models") or {}) if not ours(p)]))
        if dropped:
            rank_zero_warn(f"not restoring {len(dropped)} checkpoint path(s) from the checkpoint's callback state: they lie "
                           f"outside {root}: {dropped[:3]}")
        best_k = {p: v for p, v in (state_dict.get("best_k_models") or {}).items() if ours(p)}
        self.best_k_models = best_k
        if ours(state_dict.get("best_model_path")):
            self.best_model_path = state_dict["best_model_path"]
            self.best_model_score = state_dict.get("best_model_score")
        if ours(state_dict.get("kth_best_model_path")):
            self.kth_best_model_path = state_dict["kth_best_model_path"]
            self.kth_value = state_dict.get("kth_value", self.kth_value)
        if ours(state_dict.get("last_model_path")):
            self.last_model_path = state_dict["last_model_path"]

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if self.dirpath is not None and inside(filepath, self.dirpath) and filepath.endswith(".ckpt"):
            super()._remove_checkpoint(trainer, filepath)

    def on_train_end(self, trainer: L.Trainer, module) -> None:
        if not trainer.fast_dev_run:  # Lightning writes last.ckpt here even in a fast_dev_run
            super().on_train_end(trainer, module)

    def _update_best_and_save(self, current, trainer: L.Trainer, monitor_candidates) -> None:
        # A non-finite score is never a "best" model (Lightning would save NaN as +inf into a free slot).
        if current is None or not math.isfinite(float(current)):
            rank_zero_warn(f"step {trainer.global_step}: {self.monitor} is {float(current)}; no best checkpoint saved")
            return
        super()._update_best_and_save(current, trainer, monitor_candidates)


class SafeOnExceptionCheckpoint(L.Callback):
    """on_exception.ckpt, written only when this run made progress since it started (or resumed):
    a resume that fails at once must not overwrite a good checkpoint with an untrained one. Nothing
    is written after a failed write (a full disk, a directory turned read-only).

    Lightning's OnExceptionCheckpoint is deliberately not the base: its presence makes ``fit(ckpt_path=None)``
    look for a "last" checkpoint to resume silently (and warn twice on every fresh run)."""

    def __init__(self, dirpath, filename: str = "on_exception"):
        self.dirpath, self.filename = dirpath, filename
        self._start_step: int | None = None

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + ".ckpt")

    def on_train_start(self, trainer: L.Trainer, module) -> None:
        self._start_step = trainer.global_step

    def on_exception(self, trainer: L.Trainer, module, exception: BaseException) -> None:
        if self._start_step is None or trainer.global_step <= self._start_step or isinstance(exception, OSError):
            return
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)

    def teardown(self, trainer: L.Trainer, module, stage: str) -> None:
        if stage == "fit":  # a run that ended well: an older crash's checkpoint is stale
            trainer.strategy.remove_checkpoint(self.ckpt_path)
