"""The entry points' own keys: every bad value stops the run before any work, with ONE line naming the
key, the value and what is allowed. train.py, sample.py and the scripts call ``validate_*`` first.

Each key is checked in exactly one place: here only the keys of an entry point itself (seed, ckpt_path,
trainer.*, sample.py's options). The model's keys are checked by its family (glow.families.check), the
training module's by glow.module_args, the data module's by glow.data.checks, a sample task's fit to
the model by glow.sampling.tasks, an inpainting method by glow.sampling.inpaint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from glow import families
from glow.errors import ConfigError, fail, is_int, is_number
from glow.masks import MASK_KINDS
from glow.sampling.interpolate import INTERPOLATION_MODES
from glow.sampling.tasks import TASKS

PRECISIONS = ("32-true", "32", "64-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true")


def _choice(cfg: DictConfig, key: str, allowed) -> None:
    value = cfg.get(key.split(".")[-1])
    if value not in allowed:
        fail(key, value, "use one of " + ", ".join("null" if a is None else str(a) for a in allowed))


def _positive_int(key: str, value, allow_minus_one: bool = False) -> None:
    if not (is_int(value) and (value >= 1 or (allow_minus_one and value == -1))):
        fail(key, value, "use a positive integer" + (" (or -1)" if allow_minus_one else ""))


def validate_model(model: DictConfig) -> None:
    """The model group's keys, by the family's own checks (glow.families)."""
    try:
        families.check(OmegaConf.to_container(model, resolve=True) if isinstance(model, DictConfig) else model)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def validate_ckpt_path(value, required: bool = False) -> None:
    """An existing checkpoint file (or None when not ``required``)."""
    if required and (value is None or not Path(str(value)).is_file()):
        fail("ckpt_path", value, "give the path of a checkpoint written by train.py, "
                                 "e.g. ckpt_path=outputs/mnist/<run>/checkpoints/last.ckpt")
    if value is not None and not Path(str(value)).is_file():
        fail("ckpt_path", value, "give the path of an existing checkpoint file, e.g. <run dir>/checkpoints/last.ckpt")


def validate_train(cfg: DictConfig) -> None:
    validate_model(cfg.model)
    # the best checkpoint (monitor val/bpd) and the sample grids need validation images
    val = cfg.data.get("val_fraction")
    if not (is_number(val) and 0 < val < 1):
        fail("data.val_fraction", val, "use a number in (0, 1): training needs validation images "
                                       "(best checkpoint by val/bpd, sample grids)")
    _positive_int("trainer.max_steps", cfg.trainer.get("max_steps"), allow_minus_one=True)
    precision = str(cfg.trainer.get("precision"))
    if precision not in PRECISIONS:
        fail("trainer.precision", precision, "use one of " + ", ".join(PRECISIONS))
    validate_ckpt_path(cfg.get("ckpt_path"))


# -- sample.py -------------------------------------------------------------------------------------
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
            or not all(is_number(v) and (minimum is None or v >= minimum) for v in value):
        fail(key, value, f"use a non-empty list of numbers{'' if minimum is None else ' >= 0'}, e.g. {example}")


def validate_sample(cfg: DictConfig) -> None:
    """sample.py's config-only checks, before anything is loaded."""
    _choice(cfg, "task", tuple(TASKS))
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
    if not (is_number(cfg.get("temperature")) and cfg.temperature >= 0):
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
    if cfg.task == "inpaint":
        _choice(cfg, "mask", MASK_KINDS)
    if cfg.task == "manipulate" and cfg.get("attribute") is None:
        fail("attribute", None, "task=manipulate needs one: a CelebA attribute name or index (data.target=attr), "
                                 "or a class label, e.g. attribute=8 baseline=3")
