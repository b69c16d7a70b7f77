"""Checkpoint files: atomic writes, safe removal, and reads that name the file and the problem.

Every checkpoint this project reads goes through ``read_checkpoint`` (``torch.load(weights_only=True)``),
and every one it writes goes through ``atomic_save``: a temporary file in the SAME directory, fsync,
``os.replace``, fsync of the directory. A reader (or a kill) therefore sees the old file or the new
one, never a half-written or empty one, whatever filesystem ``$TMPDIR`` is on.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from glow.errors import CheckpointError
from glow.runlock import process_alive

# ".<name>.ckpt.<pid>.tmp": the pid lets a later run tell a dead writer's leftovers from a live one's;
# only a checkpoint's temp files are ever removed.
_TMP = re.compile(r"^\.(?P<name>.+\.ckpt)\.(?P<pid>\d+)\.tmp$")

# The layout of what train.py saves (hyper_parameters.model_config, state_dict prefixes model. and
# ema.module.). 1: checkpoints written before the version was recorded; 2: the density-model interface.
# Raise it when a change stops older code from reading newer checkpoints, and say in
# ``check_format_version`` what an older one needs.
FORMAT_VERSION = 2
FORMAT_KEY = "glow_format_version"


def _fsync_dir(directory: Path) -> None:
    with suppress(OSError):  # some filesystems (and Windows) cannot open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always either the old or the whole new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(err, OSError) and err.filename is None:  # a failed write names no file: name ours
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    _fsync_dir(path.parent)


def atomic_save(obj: Any, path: str | Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(buffer.getvalue(), path)


def remove_stale_temp_files(directory: str | Path) -> list[Path]:
    """Delete temp files left by writers that were killed (their pid is gone); returns them."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for f in directory.iterdir():
        m = _TMP.match(f.name)
        if m and f.is_file() and not _pid_alive(int(m["pid"])):
            with suppress(FileNotFoundError):
                f.unlink()
                removed.append(f)
    return removed


def _pid_alive(pid: int) -> bool:
    # our own leftovers can only be from an earlier, failed write
    return pid != os.getpid() and process_alive(pid)


def inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path`` (a plain local path; symlinks resolved) lies inside the directory ``root``."""
    text = str(path)
    if "://" in text:  # local://, file://, s3://...: never ours
        return False
    real, base = os.path.realpath(text), os.path.realpath(str(root))
    return os.path.commonpath([real, base]) == base and real != base


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """``torch.load(path, weights_only=True)`` of a train.py checkpoint, or a one-line CheckpointError."""
    name = f"ckpt_path={str(path)!r}"
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{name}: no such checkpoint file; give e.g. <run dir>/checkpoints/last.ckpt")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{name} is empty (0 bytes): an interrupted copy? use another checkpoint")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused an object: not written by train.py
        raise CheckpointError(f"{name} is not a checkpoint of ours: it holds objects that weights_only=True "
                              f"refuses ({_first_line(err)[:120]})") from None
    except (EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{name} is truncated or corrupt ({type(err).__name__})") from None
    except RuntimeError as err:
        text = _first_line(err)
        problem = "truncated or corrupt" if re.search(r"zip|archive|PytorchStreamReader|file|record", text, re.I) \
            else "unreadable"
        raise CheckpointError(f"{name} is {problem} ({text[:120]})") from None
    except Exception as err:  # anything else a decoder raises: still one line with the name
        raise CheckpointError(f"{name} could not be read ({type(err).__name__}: {_first_line(err)[:120]})") from None
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict)
            and isinstance(checkpoint.get("hyper_parameters"), dict)
            and isinstance(checkpoint["hyper_parameters"].get("model_config"), dict)):
        raise CheckpointError(f"{name} is not a checkpoint of ours: no state_dict and "
                              f"hyper_parameters.model_config (was it written by train.py?)")
    check_format_version(checkpoint, name)
    return checkpoint


def format_version(checkpoint: dict) -> int:
    version = checkpoint.get(FORMAT_KEY, 1)
    return version if isinstance(version, int) and not isinstance(version, bool) else -1


def check_format_version(checkpoint: dict, name: str) -> None:
    """Versions up to this code's load (an older one's missing settings take their defaults); a newer
    one is named with both versions."""
    version = format_version(checkpoint)
    if not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(f"{name} has checkpoint format version {checkpoint.get(FORMAT_KEY)!r}, and this code "
                              f"reads versions 1 to {FORMAT_VERSION}: use the project version that wrote it")


def model_weights(checkpoint: dict, use_ema: bool = True) -> dict:
    """The model's state dict inside a train.py checkpoint: the EMA weights when asked and present.

    The average holds parameters only, so the buffers (ActNorm flags, permutations) are the live
    model's. torch.compile wraps modules as ``_orig_mod``: stripped, so compiled and plain runs load alike.
    """
    state = checkpoint["state_dict"]

    def under(prefix: str) -> dict:
        return {k[len(prefix):].replace("_orig_mod.", ""): v for k, v in state.items() if k.startswith(prefix)}

    live = under("model.")
    if use_ema and any(k.startswith("ema.module.") for k in state):
        return {**live, **under("ema.module.")}
    return live


def check_model_config(checkpoint: dict, model_config: dict, path: str | Path, defaults: dict | None = None,
                       ignore: tuple[str, ...] = ()) -> None:
    """One line naming the first model setting where the checkpoint differs from this run's config.

    ``defaults`` fills settings one side does not name (an older checkpoint, a newer option);
    ``ignore`` names settings that change how the model runs, not its weights (model.memory, model.compile)."""
    saved = checkpoint["hyper_parameters"]["model_config"]
    defaults = defaults or {}
    for key in list(model_config) + [k for k in saved if k not in model_config]:
        if key in ignore:
            continue
        a, b = saved.get(key, defaults.get(key)), model_config.get(key, defaults.get(key))
        if _normal(a) != _normal(b):
            raise CheckpointError(f"ckpt_path={str(path)!r} was saved by another model config: "
                                  f"{key} {_show(a)} != {_show(b)} (checkpoint != this run)")


def _normal(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _show(value: Any) -> str:
    return "unset" if value is None else str(list(value) if isinstance(value, tuple) else value)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's CheckpointIO with atomic saves, validated weights-only loads, and removal limited
    to checkpoint files inside ``root`` (the run's checkpoints/ directory)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else None
        self.preloaded: dict[str, dict] = {}  # path -> checkpoint already read (and checked) by train.py
        if self.root is not None:
            remove_stale_temp_files(self.root)

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO does not take storage_options")
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        cached = self.preloaded.pop(str(path), None)
        return cached if cached is not None else read_checkpoint(path, map_location or "cpu")

    def remove_checkpoint(self, path) -> None:
        if self.root is None or not inside(path, self.root) or not str(path).endswith(".ckpt") \
                or os.path.isdir(path):
            rank_zero_warn(f"not removing {str(path)!r}: only checkpoint files inside {self.root} are ours to remove")
            return
        with suppress(FileNotFoundError):
            os.unlink(path)  # never recursive: a directory is never a checkpoint of ours
