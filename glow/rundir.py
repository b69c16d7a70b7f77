"""One run, one directory.

The default run directory is ``<time>_<run id>``: two runs started in the same second (a sweep, a
job array) never share one. The run id is the process id plus a random suffix, created once and
passed to child processes through ``$GLOW_RUN_ID`` (so DDP ranks that re-run the script agree);
a scheduler's job id is used when there is one, so every rank of a SLURM job agrees too.

A directory that already holds checkpoints belongs to another run: train.py refuses it unless
told to resume (``ckpt_path=last`` resumes that directory's last.ckpt).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from omegaconf import OmegaConf


def run_id() -> str:
    if not os.environ.get("GLOW_RUN_ID"):
        job = os.environ.get("SLURM_JOB_ID")
        if job:
            step = os.environ.get("SLURM_STEP_ID")
            os.environ["GLOW_RUN_ID"] = f"slurm{job}" + (f".{step}" if step else "")
        else:
            os.environ["GLOW_RUN_ID"] = f"{os.getpid()}{secrets.token_hex(2)}"
    return os.environ["GLOW_RUN_ID"]


def register_resolver() -> None:
    """``${run_id:}`` in conf/train.yaml's hydra.run.dir."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id)


def is_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def resolve_ckpt_path(ckpt_path, output_dir: str | Path):
    """``ckpt_path=last`` -> this run directory's checkpoints/last.ckpt; a used directory without a
    ckpt_path -> ConfigError. Returns the checkpoint path to use (or None)."""
    from glow.errors import ConfigError  # imported here: run_id() must stay cheap to import

    checkpoints = Path(output_dir) / "checkpoints"
    if ckpt_path == "last":
        last = checkpoints / "last.ckpt"
        if not last.is_file():
            raise ConfigError(f"ckpt_path='last' is not allowed: {last} does not exist; set hydra.run.dir "
                              f"to the run directory to resume, or give the checkpoint's path")
        return str(last)
    if ckpt_path is None and is_rank_zero() and checkpoints.is_dir():
        found = sorted(p.name for p in checkpoints.glob("*.ckpt"))
        if found:
            raise ConfigError(f"paths.output_dir={str(output_dir)!r} is not allowed: it already holds checkpoints "
                              f"of a run ({', '.join(found[:3])}); resume it with ckpt_path=last or use a new "
                              f"directory")
    return ckpt_path
