"""Pre-emption: SIGTERM / SIGUSR1 (what SLURM and most schedulers send) and SIGINT stop training at
the next step boundary with a resumable last.ckpt, then the process exits 128 + signal number
(143 for SIGTERM, 138 for SIGUSR1, 130 for SIGINT), so a scheduler never mistakes it for success.

The handler only sets a flag; the checkpoint is written by the training loop between steps, where
the state is consistent (the same place the periodic last.ckpt is written, so it resumes exactly).
A signal before training starts or after it ends exits at once: there is nothing new to save.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import lightning as L

SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGUSR1", "SIGINT")) if s is not None)


class Preempted(SystemExit):
    """Raised after the checkpoint is written; its code is 128 + the signal number."""


class PreemptionCheckpoint(L.Callback):
    def __init__(self, dirpath: str | Path):
        self.dirpath = Path(dirpath)
        self.signum: int | None = None
        self.training = False
        self.saved: Path | None = None
        self._previous = {}

    # -- signal handling ---------------------------------------------------------------
    def install(self) -> None:
        for s in SIGNALS:
            try:
                previous = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (e.g. some test runners): leave signals alone
                return
            self._previous.setdefault(s, previous)

    def uninstall(self) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        if not self.training:
            print(f"{signal.Signals(signum).name}: stopping (no training in progress, nothing to save)",
                  file=sys.stderr)
            raise Preempted(128 + signum)

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + self.signum

    # -- Lightning hooks ---------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, module) -> None:
        self.training = True
        # Lightning's signal connector installed its own SIGTERM handler at fit start (it raises,
        # and the process then exits 1 without a checkpoint); ours takes over for the training loop.
        self.install()

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch, batch_idx: int) -> None:
        flag = self.signum is not None
        if trainer.world_size > 1:  # every rank must stop at the same step, or DDP hangs
            flag = trainer.strategy.reduce_boolean_decision(flag, all=False)
        if not flag:
            return
        if self.signum is None:  # another rank was signalled
            self.signum = signal.SIGTERM
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # atomic (glow.checkpoints.SafeCheckpointIO)
        self.saved = path
        if trainer.checkpoint_callback is not None:
            trainer.checkpoint_callback.last_model_path = str(path)
        trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, module) -> None:
        self.training = False
