"""The project's error types and the one-line message format: a leaf module, imported from anywhere.

Every bad input ends as ONE line naming the key (or file), the value and what is allowed; the entry
points print it as ``config error: <line>`` and exit with code 2 (``exit_with_config_error``).
"""

from __future__ import annotations

import math
import sys
from typing import NoReturn

from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A bad config value; its message is one line."""


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used; the message is one line naming the file and the problem."""


class UnsupportedError(ConfigError):
    """A task or route that this model family cannot do (its capabilities say so); one line."""


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float (bools and NaN/inf are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def shown(value):
    """A config value as the user typed it: OmegaConf containers become plain lists and dicts."""
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def not_allowed(key: str, value, allowed: str) -> ConfigError:
    """``<key>=<value> is not allowed: <allowed>``, the one message format of every check."""
    return ConfigError(f"{key}={shown(value)!r} is not allowed: {allowed}")


def fail(key: str, value, allowed: str) -> NoReturn:
    raise not_allowed(key, value, allowed)


def first_line(err: BaseException | str) -> str:
    text = (err if isinstance(err, str) else str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__


def unwrap(err: BaseException) -> BaseException:
    """The error behind hydra.instantiate's wrapper (it wraps what the target raised)."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def exit_with_config_error(err: BaseException | str) -> NoReturn:
    """Print ``config error: <one line>`` to stderr and exit with code 2 (every entry point's way out)."""
    print(f"config error: {first_line(err if isinstance(err, str) else unwrap(err))}", file=sys.stderr)
    raise SystemExit(2)
