"""Resuming a run in its own directory: ``ckpt_path=auto`` (resume if there is a last.ckpt, else
start) or ``last``, with the run's saved config and the overrides given now on top.

``ClaimRunDir`` is a Hydra callback (conf/train.yaml, ``hydra.callbacks``): it runs after the config
is composed and BEFORE Hydra creates the run directory or writes into it, so it can refuse a
directory that is not this run's (glow.rundir.claim: one line, exit 2, nothing written), take its
lock, and read the saved config before anything overwrites it. For a resume it also stops Hydra
from rewriting ``.hydra/``: train.py writes the effective config there itself, atomically, once the
run has passed its checks (``save_effective_config``), so a refused resume never loses the saved one.

Which settings must match the checkpoint: the model's (glow.checkpoints.check_model_config) and
``RESUME_MUST_MATCH`` below. Everything else of ``module.*`` (lr, warmup, clipping, weights of terms,
masks), ``trainer.*`` (max_steps, ...) and ``data.*`` may change.
"""

from __future__ import annotations

import copy
import inspect
import os
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from glow import rundir
from glow.checkpoints import atomic_write_bytes
from glow.module import DensityModule
from glow.errors import CheckpointError, ConfigError, exit_with_config_error
from glow.run_config import given_overrides, plain_value, reapply, saved_run

# module.* settings a checkpoint's state depends on: the bit depth its figures are in, the optimiser
# whose moments it holds, and whether it holds an EMA average (ema_decay's value itself may change).
RESUME_MUST_MATCH = {"n_bits": lambda v: v, "optimizer": lambda v: v, "ema_decay": lambda v: bool(v)}
ALWAYS_NOW = ("ckpt_path", "paths.output_dir")  # never taken from the saved config
_SAVED: dict[str, tuple[DictConfig, dict]] = {}    # realpath -> (saved config, group choices), read by rank 0
_PENDING: dict[str, DictConfig] = {}               # realpath -> effective config to write once checked


class ClaimRunDir(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        directory = config.hydra.run.dir
        try:
            resumed = rundir.claim(directory, config.get("ckpt_path"))
            if rundir.is_rank_zero() and rundir.resumes_own_run(directory, resumed):
                saved = saved_run(directory)
                if saved[0] is not None:
                    _SAVED[os.path.realpath(directory)] = saved
                    with read_write(config.hydra), open_dict(config.hydra):
                        config.hydra.output_subdir = None  # the saved config stays until this run passed its checks
        except ConfigError as err:
            exit_with_config_error(err)


def resumed_config(cfg: DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """The config of a run that resumes its own directory: its saved config with ``overrides`` (default:
    this command line's) on top; any other run's config as it is."""
    directory = cfg.paths.output_dir
    resumed = rundir.claim(directory, cfg.get("ckpt_path"))
    if not rundir.resumes_own_run(directory, resumed):
        return cfg
    real = os.path.realpath(directory)
    saved, choices = _SAVED.pop(real, None) or saved_run(directory)  # other ranks: rank 0's, written by now
    if saved is None:
        return cfg
    effective = reapply(saved, cfg, (given_overrides() or []) if overrides is None else overrides, choices)
    for key in ALWAYS_NOW:
        OmegaConf.update(effective, key, plain_value(cfg, key), force_add=True)
    if rundir.is_rank_zero():
        _PENDING[real] = copy.deepcopy(effective)  # as given: train.run resolves ckpt_path in its own copy
    OmegaConf.set_struct(effective, True)
    return effective


def save_effective_config(cfg: DictConfig) -> None:
    """Write a resumed run's effective config to .hydra/config.yaml (after its checks passed)."""
    effective = _PENDING.pop(os.path.realpath(cfg.paths.output_dir), None)
    if effective is not None:
        atomic_write_bytes(OmegaConf.to_yaml(effective).encode(), Path(cfg.paths.output_dir) / ".hydra" / "config.yaml")


def check_resume_hparams(checkpoint: dict, hparams: dict, path) -> None:
    """One line naming the first of ``RESUME_MUST_MATCH`` where the checkpoint and this run differ."""
    saved = checkpoint["hyper_parameters"]
    defaults = {k: p.default for k, p in inspect.signature(DensityModule).parameters.items()}
    for key, normal in RESUME_MUST_MATCH.items():
        before, now = saved.get(key, defaults[key]), hparams.get(key, defaults[key])  # an older checkpoint: defaults
        if normal(before) != normal(now):
            before, now = _show(before), _show(now)
            raise CheckpointError(f"ckpt_path={str(path)!r} was saved with module.{key}={before} and this run has "
                                  f"module.{key}={now}: resume with module.{key}={before} (the checkpoint's state "
                                  f"depends on it), or start a new run")


def _show(value) -> str:
    return "null" if value is None else str(value)
