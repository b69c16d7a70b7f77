"""One run, one directory, and a run writes only into its own.

The default run directory is ``<time>_<run id>``: two runs started in the same second (a sweep, a
job array) never share one. train.py's run id is the process id plus a random suffix, created once
and passed to child processes through ``$GLOW_RUN_ID`` (so DDP ranks that re-run the script agree);
a scheduler's job id is used when there is one, so every rank of a SLURM job agrees too. sample.py
and the evaluate scripts, one process each, use ``${unique_id:}`` (never inherited).

``claim`` decides, before anything is written, whether this run may use its directory, and takes
the directory's lock (glow.runlock): a second run on the same directory stops with one line. A
directory holds nothing, a run that never wrote anything to keep (``STARTED``), a run with
checkpoints or results (``USED``), or files of something else (``FOREIGN``: refused whatever the
ckpt_path, and left untouched). A used directory is only resumed (``ckpt_path=auto``, ``last``, or a
checkpoint inside it), never overwritten by a new run or by another run's checkpoint.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from omegaconf import OmegaConf

from glow import runlock
from glow.errors import ConfigError

NEW, STARTED, USED, FOREIGN = "new", "started", "used", "foreign"
RESUME_WORDS = ("auto", "last")
# What a run writes that is worth keeping; the rest of a run's files (.hydra/, train.log, samples/,
# logger folders) are rewritten by a run that starts again there.
KEPT = ("results.json",)
_CLAIMED: dict[str, str | None] = {}  # realpath -> the checkpoint this process's run resumes (or None)


def run_id() -> str:
    if not os.environ.get("GLOW_RUN_ID"):
        job = os.environ.get("SLURM_JOB_ID")
        if job:
            step = os.environ.get("SLURM_STEP_ID")
            os.environ["GLOW_RUN_ID"] = f"slurm{job}" + (f".{step}" if step else "")
        else:
            os.environ["GLOW_RUN_ID"] = f"{os.getpid()}{secrets.token_hex(2)}"
    return os.environ["GLOW_RUN_ID"]


_UNIQUE = f"{os.getpid()}{secrets.token_hex(2)}"


def unique_id() -> str:
    """This process's own id (pid + random), never inherited: single-process scripts' directories."""
    return _UNIQUE


def register_resolver() -> None:
    """``${run_id:}`` in conf/train.yaml's hydra.run.dir, ``${unique_id:}`` in the scripts'."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id)
    if not OmegaConf.has_resolver("unique_id"):
        OmegaConf.register_new_resolver("unique_id", unique_id)


def is_rank_zero() -> bool:
    """Rank 0 of a DDP job (torchrun, Lightning's launcher, SLURM's srun tasks), or a single process."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value) == 0
    return True


def state_of(directory: str | Path) -> tuple[str, list[str]]:
    """(NEW | STARTED | USED | FOREIGN, what decided it: up to 3 names inside the directory)."""
    directory = Path(directory)
    names = sorted(n for n in os.listdir(directory) if n != runlock.LOCK_NAME) if directory.is_dir() else []
    if not names:
        return (NEW if not (directory / runlock.LOCK_NAME).is_file() else STARTED), []
    checkpoints = directory / "checkpoints"
    saved = sorted(f"checkpoints/{p.name}" for p in checkpoints.glob("*.ckpt")) if checkpoints.is_dir() else []
    ours = (directory / runlock.LOCK_NAME).is_file() or (directory / ".hydra" / "config.yaml").is_file() or saved
    if not ours:
        return FOREIGN, names[:3]
    kept = saved + [n for n in KEPT if (directory / n).is_file()]
    return (USED, kept[:3]) if kept else (STARTED, [])


def _inside(path: str, directory: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([real, base]) == base


def decide(directory: Path, ckpt_path, key: str) -> str | None:
    """The checkpoint a run with ``ckpt_path`` resumes in ``directory`` (None: a fresh start), or a
    one-line ConfigError when the directory is not this run's to write."""
    state, names = state_of(directory)
    shown = ", ".join(names)
    last = directory / "checkpoints" / "last.ckpt"
    if state == FOREIGN:
        raise ConfigError(f"{key}={str(directory)!r} is not allowed: it holds files that are not a train.py run's "
                          f"({shown}), and a run never writes into another folder: use a new or empty directory")
    if ckpt_path == "last" or (ckpt_path == "auto" and last.is_file()):
        if not last.is_file():
            raise ConfigError(f"ckpt_path='last' is not allowed: {last} does not exist; set hydra.run.dir "
                              f"to the run directory to resume, give the checkpoint's path, or use ckpt_path=auto "
                              f"(resume if there is one, else start)")
        return str(last)
    if state != USED:
        return None if ckpt_path == "auto" else ckpt_path
    if ckpt_path is None:
        raise ConfigError(f"{key}={str(directory)!r} is not allowed: it already holds a run ({shown}); resume it "
                          f"with ckpt_path=auto (or ckpt_path=last), or use a new directory")
    if ckpt_path == "auto":
        raise ConfigError(f"ckpt_path='auto' is not allowed with {key}={str(directory)!r}: it holds a run ({shown}) "
                          f"but no checkpoints/last.ckpt to resume; give ckpt_path=<one of its checkpoints> or "
                          f"use a new directory")
    if not _inside(str(ckpt_path), directory):
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r} is not allowed with {key}={str(directory)!r}: that directory "
                          f"holds another run ({shown}) whose checkpoints and results.json this run would overwrite; "
                          f"resume that run with ckpt_path=auto, or continue from this checkpoint in a new directory")
    return str(ckpt_path)


def claim(directory: str | Path, ckpt_path, key: str = "hydra.run.dir") -> str | None:
    """Check the run directory and lock it for this process; returns the checkpoint to resume (or None).

    ``ckpt_path=auto`` resumes checkpoints/last.ckpt when there is one and starts fresh otherwise;
    ``last`` requires it. Only rank 0 checks and locks; the other ranks resolve alike. A directory
    this process has claimed already (train.py's Hydra callback, before Hydra writes into it) keeps
    that decision. Raises a one-line ConfigError, having written nothing, when the run may not go on.
    """
    directory = Path(directory)
    real = os.path.realpath(directory)
    if real in _CLAIMED:
        return _CLAIMED[real]
    if not is_rank_zero():
        last = directory / "checkpoints" / "last.ckpt"
        if ckpt_path in RESUME_WORDS:
            return str(last) if last.is_file() or ckpt_path == "last" else None
        return ckpt_path
    try:
        decide(directory, ckpt_path, key)  # refuse a foreign folder before writing anything into it
    except ConfigError:
        owner = runlock.holder(directory)  # a run at work there: say so, whatever it has written yet
        if owner is not None:
            raise _in_use(key, directory, owner) from None
        raise
    created = not directory.exists()
    try:
        runlock.acquire(directory)
    except runlock.LockHeld as held:
        raise _in_use(key, directory, held.owner) from None
    except OSError as err:
        raise ConfigError(f"{key}={str(directory)!r} is not allowed: cannot write there "
                          f"({err.strerror or err}); use a writable directory") from None
    try:
        resumed = decide(directory, ckpt_path, key)  # again, now that no other run can change it
    except ConfigError:
        runlock.release(directory)
        if created:  # leave no trace of a refused run
            (directory / runlock.LOCK_NAME).unlink(missing_ok=True)
            if not any(directory.iterdir()):
                directory.rmdir()
        raise
    _CLAIMED[real] = resumed
    return resumed


def _in_use(key: str, directory: Path, owner: str) -> ConfigError:
    return ConfigError(f"{key}={str(directory)!r} is not allowed: another run ({owner}) is writing there now; "
                       f"wait for it to end, or use a new directory")


def resumes_own_run(directory: str | Path, resumed: str | None) -> bool:
    """Whether the checkpoint resumed lies in this run directory: the run goes on, with its saved config."""
    return resumed is not None and _inside(resumed, Path(directory))


def release(directory: str | Path) -> None:
    """The run is over: drop the lock and the decision (a later run in this process decides anew)."""
    _CLAIMED.pop(os.path.realpath(directory), None)
    runlock.release(directory)
