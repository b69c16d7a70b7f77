"""Config validation: every bad value stops the run before any work, with ONE line naming the key,
the value and what is allowed. train.py, sample.py and the scripts call ``validate_*`` first.

Each check is written once: the model's and the bit depth's live beside the code they guard
(``glow.model_args.check_arguments``, ``glow.quantize.check_n_bits``) and are called from here; the
data module checks its own arguments (``glow.data.checks``) when the config instantiates it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import NoReturn

from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from glow import families
from glow.conditioning import task_problem
from glow.masks import MASK_KINDS
from glow.model_args import check_arguments
from glow.module import OPTIMIZERS
from glow.quantize import check_n_bits

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


def fail(key: str, value, allowed: str) -> None:
    if isinstance(value, (ListConfig, DictConfig)):
        value = OmegaConf.to_container(value)
    raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _choice(cfg: DictConfig, key: str, allowed) -> None:
    value = cfg.get(key.split(".")[-1])
    if value not in allowed:
        fail(key, value, "use one of " + ", ".join("null" if a is None else str(a) for a in allowed))


def _positive_int(key: str, value, allow_minus_one: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 1 or (allow_minus_one and value == -1))
    if not ok:
        fail(key, value, "use a positive integer" + (" (or -1)" if allow_minus_one else ""))


def _positive_number(key: str, value, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    # NaN compares False with everything, so `value <= 0` alone lets it (and inf) through
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        fail(key, value, "use a finite positive number" + (" or null" if nullable else ""))


def _fraction(key: str, value, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (0 < value < 1 if low_open else 0 <= value <= 1):
        fail(key, value, "use a number in (0, 1)" if low_open else "use a number in [0, 1]")


def validate_model(model: DictConfig) -> None:
    try:
        if families.family_of(model) != "glow":  # the other families' checks (glow.families)
            families.check(OmegaConf.to_container(model, resolve=True) if isinstance(model, DictConfig) else model)
            return
    except ValueError as err:
        raise ConfigError(str(err)) from None
    keys = ("levels", "steps", "hidden_channels", "spline_bins", "coupling", "permutation", "mask", "conditional")
    try:
        check_arguments(**{k: model.get(k) for k in keys}, num_classes=model.get("num_classes", 10),
                        class_head=model.get("class_head", False),
                        affine_scale=model.get("affine_scale", "sigmoid"),
                        cond_encoder=model.get("cond_encoder", "cnn"),
                        conditional_layers=model.get("conditional_layers", False),
                        observed_noise=model.get("observed_noise", "none"), memory=model.get("memory", "none"),
                        compile=model.get("compile", False), channels_last=model.get("channels_last", False),
                        hole_predictor=model.get("hole_predictor", False))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def validate_image_size(model: DictConfig, image_shape) -> None:
    if families.family_of(model) != "glow":  # vector models take any size
        return
    _, h, w = image_shape
    factor = 2 ** model.levels
    if h % factor or w % factor:
        fail("data.image_size", h if h == w else f"{h}x{w}",
              f"with model.levels={model.levels} height and width must be divisible by 2^levels={factor}")


def validate_n_bits(value) -> None:
    try:
        check_n_bits(value, "module.n_bits")
    except ValueError as err:
        raise ConfigError(str(err)) from None


def validate_ckpt_path(value, required: bool = False) -> None:
    """An existing checkpoint file (or None when not ``required``)."""
    if required and (value is None or not Path(str(value)).is_file()):
        fail("ckpt_path", value, "give the path of a checkpoint written by train.py, "
                                  "e.g. ckpt_path=outputs/mnist/<run>/checkpoints/last.ckpt")
    if value is not None and not Path(str(value)).is_file():
        fail("ckpt_path", value, "give the path of an existing checkpoint file, e.g. <run dir>/checkpoints/last.ckpt")


def check_image_shape(data_shape, model_shape, data_name: str) -> None:
    """The data group's images must be the shape the checkpoint's model takes."""
    if tuple(data_shape) != tuple(model_shape):
        fail("data", data_name, f"its images are {tuple(data_shape)} but the checkpoint's model takes "
                                 f"{tuple(model_shape)}: pass the data group (and data.image_size) "
                                 f"the model was trained on")


def validate_train(cfg: DictConfig) -> None:
    validate_model(cfg.model)
    module = cfg.module
    validate_n_bits(module.get("n_bits"))
    _choice(module, "module.optimizer", tuple(OPTIMIZERS))
    _positive_number("module.lr", module.get("lr"))
    _positive_number("module.grad_clip_norm", module.get("grad_clip_norm"), nullable=True)
    decay = module.get("weight_decay", 0.0)
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not math.isfinite(decay) or decay < 0:
        fail("module.weight_decay", decay, "use a finite number >= 0")
    _positive_int("module.max_nonfinite_steps", module.get("max_nonfinite_steps", 20))
    _positive_number("module.hole_regression_weight", module.get("hole_regression_weight", 1.0))
    # the best checkpoint (monitor val/bpd) and the sample grids need validation images
    val = cfg.data.get("val_fraction")
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val) or not 0 < val < 1:
        fail("data.val_fraction", val, "use a number in (0, 1): training needs validation images "
                                        "(best checkpoint by val/bpd, sample grids)")
    if cfg.data.get("max_bad_fraction") is not None:
        _fraction("data.max_bad_fraction", cfg.data.get("max_bad_fraction"))
    warmup = module.get("warmup_steps")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        fail("module.warmup_steps", warmup, "use a non-negative integer")
    kl_warmup = module.get("kl_warmup_steps", 0)
    if isinstance(kl_warmup, bool) or not isinstance(kl_warmup, int) or kl_warmup < 0:
        fail("module.kl_warmup_steps", kl_warmup, "use a non-negative integer (0: no KL warm-up)")
    if kl_warmup and families.family_of(cfg.model) != "vae":
        fail("module.kl_warmup_steps", kl_warmup, "use 0: only model.family=vae has a KL term to anneal")
    ema = module.get("ema_decay")
    if ema is not None and (isinstance(ema, bool) or not isinstance(ema, float) or not 0 < ema < 1):
        fail("module.ema_decay", ema, "use a number in (0, 1) or null")
    _positive_int("module.init_batch_size", module.get("init_batch_size"))
    _positive_int("data.batch_size", cfg.data.get("batch_size"))
    _positive_int("trainer.max_steps", cfg.trainer.get("max_steps"), allow_minus_one=True)
    precision = str(cfg.trainer.get("precision"))
    if precision not in PRECISIONS:
        fail("trainer.precision", precision, "use one of " + ", ".join(PRECISIONS))
    validate_ckpt_path(cfg.get("ckpt_path"))


# -- sample.py -------------------------------------------------------------------------------------
SAMPLE_TASKS = ("sample", "temperature", "interpolate", "reconstruct", "class", "manipulate", "inpaint")
DEVICES = ("auto", "cpu", "cuda")
SPLITS = ("test", "train")


def _int_list(key: str, value, minimum: int = 0) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple, ListConfig)) or not value \
            or not all(is_int(v) and v >= minimum for v in value):
        fail(key, value, f"use a non-empty list of integers >= {minimum}, e.g. [0,1], or null")
    return [int(v) for v in value]


def _number_list(key: str, value, minimum: float | None, example: str) -> None:
    if not isinstance(value, (list, ListConfig)) or not value \
            or not all(_is_number(v) and (minimum is None or v >= minimum) for v in value):
        fail(key, value, f"use a non-empty list of numbers{'' if minimum is None else ' >= 0'}, e.g. {example}")


def validate_sample(cfg: DictConfig) -> None:
    """sample.py's config-only checks, before anything is loaded."""
    import torch

    from glow.sampling.interpolate import INTERPOLATION_MODES  # here: glow.sampling imports this module

    _choice(cfg, "task", SAMPLE_TASKS)
    validate_ckpt_path(cfg.get("ckpt_path"), required=True)
    _choice(cfg, "device", DEVICES)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        fail("device", cfg.device, "CUDA is not available on this machine: use auto or cpu")
    if not is_int(cfg.get("seed")):
        fail("seed", cfg.get("seed"), "use an integer")
    for key in ("batch_size", "direction_images"):
        _positive_int(key, cfg.get(key))
    for key in ("n", "nrow"):
        value = cfg.get(key)
        if value is not None and not (is_int(value) and value >= 1):
            fail(key, value, "use a positive integer, or null for the task's default")
    if not (_is_number(cfg.get("temperature")) and cfg.temperature >= 0):
        fail("temperature", cfg.get("temperature"), "use a number >= 0 (0: the mode of every prior; 1: the model)")
    _number_list("temperatures", cfg.get("temperatures"), 0, "[0,0.5,0.7,1.0]")
    _number_list("scales", cfg.get("scales"), None, "[-1,-0.5,0,0.5,1]")
    _choice(cfg, "mode", INTERPOLATION_MODES)
    if not (is_int(cfg.get("points")) and cfg.points >= 2):
        fail("points", cfg.get("points"), "use an integer >= 2 (both end points included)")
    _choice(cfg, "split", SPLITS)
    if cfg.get("label") is not None and not (is_int(cfg.label) and cfg.label >= 0):
        fail("label", cfg.label, "use a class label >= 0, or null")
    _int_list("classes", cfg.get("classes"))
    indices = _int_list("indices", cfg.get("indices"))
    images = cfg.get("images")
    if images is not None:
        if not isinstance(images, (list, ListConfig)) or not images:
            fail("images", images, "use a non-empty list of image files, e.g. [a.png,b.png], or null")
        for path in images:
            if not Path(str(path)).is_file():
                fail("images", images, f"{path} is not a file: give existing image files")
        if indices is not None:
            fail("indices", indices, "give either images or indices, not both")
    mask_image = cfg.get("mask_image")
    if mask_image is not None:
        if cfg.task != "inpaint":
            fail("mask_image", mask_image, "only task=inpaint takes a mask image: use null")
        if not Path(str(mask_image)).is_file():
            fail("mask_image", mask_image, "is not a file: give a PNG of the image's size, white = missing")
        if images is None:
            fail("mask_image", mask_image, "needs images=[...] (your own image files) to go with it")
    if cfg.task == "interpolate":
        given = list(images) if images is not None else indices
        if given is not None and len(given) % 2:
            fail("images" if images is not None else "indices", given,
                  "task=interpolate pairs them up (first-second, third-fourth, ...): give an even number")
    if cfg.task == "manipulate" and cfg.get("attribute") is None:
        fail("attribute", None, "task=manipulate needs one: a CelebA attribute name or index (data.target=attr), "
                                 "or a class label, e.g. attribute=8 baseline=3")


def check_sample_model(cfg: DictConfig, model) -> None:
    """sample.py's checks that need the checkpoint's model."""
    from glow.sampling.inpaint import METHODS  # here: glow.sampling imports this module

    if cfg.task == "inpaint":
        _choice(cfg, "method", METHODS)
        _choice(cfg, "mask", MASK_KINDS)
    problem = task_problem(model, cfg.task, cfg.get("method"), {k: cfg.get(k) for k in ("label", "classes")})
    if problem is not None:
        fail(*problem)
