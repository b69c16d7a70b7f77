"""Config validation: every bad value stops the run before any work, with ONE line naming the key,
the value and what is allowed. train.py, evaluate.py and sample.py call ``validate_*`` first.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import NoReturn

from hydra.errors import InstantiationException
from omegaconf import DictConfig

from glow.flows.coupling import COUPLINGS, MASKS
from glow.model import CONDITIONALS, PERMUTATIONS
from glow.module import OPTIMIZERS

PRECISIONS = ("32-true", "32", "64-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true")


class ConfigError(ValueError):
    """A bad config value; its message is one line."""


def unwrap(err: BaseException) -> BaseException:
    """The error behind hydra.instantiate's wrapper (it wraps what the target raised)."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def exit_with_config_error(err: BaseException | str) -> NoReturn:
    """Print ``config error: <one line>`` to stderr and exit with code 2 (used by every entry point)."""
    message = err if isinstance(err, str) else str(unwrap(err)).strip()
    print(f"config error: {message.splitlines()[0] if message else type(err).__name__}", file=sys.stderr)
    raise SystemExit(2)


def _fail(key: str, value, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _choice(cfg: DictConfig, key: str, allowed) -> None:
    value = cfg.get(key.split(".")[-1])
    if value not in allowed:
        _fail(key, value, "use one of " + ", ".join("null" if a is None else str(a) for a in allowed))


def _positive_int(key: str, value, allow_minus_one: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 1 or (allow_minus_one and value == -1))
    if not ok:
        _fail(key, value, "use a positive integer" + (" (or -1)" if allow_minus_one else ""))


def _positive_number(key: str, value, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    # NaN compares False with everything, so `value <= 0` alone lets it (and inf) through
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        _fail(key, value, "use a finite positive number" + (" or null" if nullable else ""))


def _fraction(key: str, value, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (0 < value < 1 if low_open else 0 <= value <= 1):
        _fail(key, value, "use a number in (0, 1)" if low_open else "use a number in [0, 1]")


def validate_model(model: DictConfig) -> None:
    for key in ("levels", "steps", "hidden_channels", "spline_bins"):
        _positive_int(f"model.{key}", model.get(key))
    _choice(model, "model.coupling", COUPLINGS)
    _choice(model, "model.permutation", PERMUTATIONS)
    _choice(model, "model.mask", MASKS)
    _choice(model, "model.conditional", CONDITIONALS)


def validate_image_size(model: DictConfig, image_shape) -> None:
    _, h, w = image_shape
    factor = 2 ** model.levels
    if h % factor or w % factor:
        _fail("data.image_size", h if h == w else f"{h}x{w}",
              f"with model.levels={model.levels} height and width must be divisible by 2^levels={factor}")


def validate_n_bits(value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8:
        _fail("module.n_bits", value, "use an integer in 1..8")


def validate_ckpt_path(value) -> None:
    if value is not None and not Path(str(value)).is_file():
        _fail("ckpt_path", value, "give the path of an existing checkpoint file, e.g. <run dir>/checkpoints/last.ckpt")


def validate_train(cfg: DictConfig) -> None:
    validate_model(cfg.model)
    module = cfg.module
    validate_n_bits(module.get("n_bits"))
    _choice(module, "module.optimizer", tuple(OPTIMIZERS))
    _positive_number("module.lr", module.get("lr"))
    _positive_number("module.grad_clip_norm", module.get("grad_clip_norm"), nullable=True)
    decay = module.get("weight_decay", 0.0)
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not math.isfinite(decay) or decay < 0:
        _fail("module.weight_decay", decay, "use a finite number >= 0")
    _positive_int("module.max_nonfinite_steps", module.get("max_nonfinite_steps", 20))
    # the best checkpoint (monitor val/bpd) and the sample grids need validation images
    val = cfg.data.get("val_fraction")
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val) or not 0 < val < 1:
        _fail("data.val_fraction", val, "use a number in (0, 1): training needs validation images "
                                        "(best checkpoint by val/bpd, sample grids)")
    if cfg.data.get("max_bad_fraction") is not None:
        _fraction("data.max_bad_fraction", cfg.data.get("max_bad_fraction"))
    warmup = module.get("warmup_steps")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        _fail("module.warmup_steps", warmup, "use a non-negative integer")
    ema = module.get("ema_decay")
    if ema is not None and (isinstance(ema, bool) or not isinstance(ema, float) or not 0 < ema < 1):
        _fail("module.ema_decay", ema, "use a number in (0, 1) or null")
    _positive_int("module.init_batch_size", module.get("init_batch_size"))
    _positive_int("data.batch_size", cfg.data.get("batch_size"))
    _positive_int("trainer.max_steps", cfg.trainer.get("max_steps"), allow_minus_one=True)
    precision = str(cfg.trainer.get("precision"))
    if precision not in PRECISIONS:
        _fail("trainer.precision", precision, "use one of " + ", ".join(PRECISIONS))
    validate_ckpt_path(cfg.get("ckpt_path"))
