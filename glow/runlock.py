"""One writer per run directory: ``<run dir>/.glow.lock``, held while a run works there.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on that file, which the kernel drops when its holder dies
(however it dies), so a stale lock of a dead process is recovered by simply taking it. The file
names its holder (``pid``, host) for the message of a run that finds it taken. Where a filesystem
cannot flock, the file alone is the lock: taken when it names no live process on this host.

The file stays after the run (emptied): it marks the directory as a run's, which glow.rundir reads.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: the pid file alone
    fcntl = None

LOCK_NAME = ".glow.lock"


class LockHeld(Exception):
    """Another live process holds the run directory's lock; ``owner`` says which."""

    def __init__(self, owner: str):
        super().__init__(owner)
        self.owner = owner


@dataclass
class RunLock:
    directory: Path
    fd: int


_HELD: dict[str, RunLock] = {}  # realpath of the directory -> the lock this process holds


def _owner_of(text: str) -> tuple[int | None, str]:
    parts = text.split()
    pid = int(parts[0]) if parts and parts[0].isdigit() else None
    return pid, (parts[1] if len(parts) > 1 else "")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(text: str) -> str:
    pid, host = _owner_of(text)
    return f"pid {pid}" + (f" on {host}" if host else "") if pid is not None else "another process"


def held(directory: str | Path) -> RunLock | None:
    """The lock this process holds on ``directory``, if any."""
    return _HELD.get(os.path.realpath(directory))


def holder(directory: str | Path) -> str | None:
    """Who holds the directory's lock (another live process), or None; takes nothing, writes nothing."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace")
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: granted unless a run holds it
                return None
            except BlockingIOError:
                return _describe(text)
            except OSError:
                pass  # no flock here: the pid file says
        pid, host = _owner_of(text)
        alive = pid is not None and pid != os.getpid() and host == socket.gethostname() and process_alive(pid)
        return _describe(text) if alive else None
    finally:
        os.close(fd)


def acquire(directory: str | Path) -> RunLock:
    """Take the directory's lock (creating the directory and the file), or raise LockHeld.
    Re-entrant within a process: a second call returns the lock already held."""
    directory = Path(directory)
    key = os.path.realpath(directory)
    if key in _HELD:
        return _HELD[key]
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace")
        flocked = False
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                flocked = True
            except BlockingIOError:
                raise LockHeld(_describe(text)) from None
            except OSError as err:  # ENOLCK, EOPNOTSUPP...: a filesystem without flock
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
        if not flocked:
            pid, host = _owner_of(text)
            if pid is not None and pid != os.getpid() and host == socket.gethostname() and process_alive(pid):
                raise LockHeld(_describe(text))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    lock = RunLock(directory, fd)
    _HELD[key] = lock
    return lock


def release(directory: str | Path) -> None:
    """Drop this process's lock on ``directory`` (nothing when it holds none); the file stays, emptied."""
    lock = _HELD.pop(os.path.realpath(directory), None)
    if lock is None:
        return
    try:
        os.ftruncate(lock.fd, 0)
    except OSError:  # an unwritable or full disk: closing still drops the flock
        pass
    os.close(lock.fd)
