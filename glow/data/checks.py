"""Argument checks of the data module: one-line ConfigErrors (ValueErrors) naming ``data.<arg>``, the value
and what is allowed, for arguments that are wrong whatever the data. Checks against the files themselves
(every image's size, missing or damaged data sets) are glow.data.screening's and glow.data.sources'."""

from __future__ import annotations

from glow.data.datasets import held_out_count
from glow.errors import ConfigError, is_int
from glow.data.registry import NAMES, RESIZE_MODES, TARGETS


def not_allowed(arg: str, value: object, allowed: str) -> ConfigError:
    """A ConfigError (a ValueError): train.py stops with this one line even when the data module raises it
    inside fit (a batch larger than the data set is found when the loader is built)."""
    return ConfigError(f"data.{arg}={value!r} is not allowed: {allowed}")


def _check_optional_positive(arg: str, value: object) -> None:
    if value is not None and not (is_int(value) and value > 0):
        raise not_allowed(arg, value, "use a positive integer or null")


def check_arguments(name, path, batch_size, eval_batch_size, image_size, resize, val_fraction,
                    test_fraction, limit_train, limit_test, target, num_workers, seed, channels,
                    max_bad_fraction) -> None:
    """Raise a one-line ValueError for the first argument that is wrong whatever the data."""
    if channels not in (None, 1, 3):
        raise not_allowed("channels", channels, "use 1 (grey), 3 (RGB) or null (the data set's own)")
    if isinstance(max_bad_fraction, bool) or not isinstance(max_bad_fraction, (int, float)) \
            or not 0 <= max_bad_fraction <= 1:
        raise not_allowed("max_bad_fraction", max_bad_fraction, "use a number in [0, 1]")
    if name not in NAMES:
        raise not_allowed("name", name, "use one of " + ", ".join(NAMES))
    if resize not in RESIZE_MODES:
        raise not_allowed("resize", resize, "use one of " + ", ".join(RESIZE_MODES))
    if target not in TARGETS:
        raise not_allowed("target", target, "use one of " + ", ".join(TARGETS))
    if target == "attr" and name != "celeba":
        raise not_allowed("target", target, f"only celeba has attributes; use 'class' for {name}")
    if name == "imagefolder" and path is None:
        raise not_allowed("path", path, "data.name=imagefolder needs the folder of images")
    if name != "imagefolder" and path is not None:
        raise not_allowed("path", path, f"only imagefolder reads a path; use null for {name}")
    if not (is_int(batch_size) and batch_size > 0):
        raise not_allowed("batch_size", batch_size, "use a positive integer")
    for arg, value in (("eval_batch_size", eval_batch_size), ("image_size", image_size),
                       ("limit_train", limit_train), ("limit_test", limit_test)):
        _check_optional_positive(arg, value)
    if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
        raise not_allowed("val_fraction", val_fraction, "use a number in [0, 1)")
    if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
        raise not_allowed("test_fraction", test_fraction, "use a number in (0, 1)")
    if num_workers is not None and not (is_int(num_workers) and num_workers >= 0):
        raise not_allowed("num_workers", num_workers, "use a non-negative integer or null")
    if not is_int(seed):
        raise not_allowed("seed", seed, "use an integer")


def check_batch_fits(batch_size: int, images_at_most: int | None, limit_train: int | None,
                     val_fraction: float) -> None:
    """Before any image is loaded: a batch larger than every training image there can be is one line (the exact
    count, and one process's share of it, is checked again by the data module's train_dataloader)."""
    if images_at_most is None:
        return
    n = images_at_most if limit_train is None else min(limit_train, images_at_most)
    kept = n - held_out_count(n, val_fraction)
    if batch_size > kept:
        raise not_allowed("batch_size", batch_size, f"there are at most {kept} training images (after data.classes, "
                                                    f"data.limit_train and data.val_fraction): use a smaller batch")


def check_classes(classes, target: str, num_classes: int) -> list[int] | None:
    """The ``classes`` filter as a list (None: keep all), or a ValueError."""
    if classes is None:
        return None
    if target != "class":
        raise not_allowed("classes", classes, "filtering by class needs data.target='class'")
    kept = list(classes)  # also accepts Hydra's ListConfig
    if not kept or not all(is_int(c) and 0 <= c < num_classes for c in kept):
        raise not_allowed("classes", classes, f"use a non-empty list of labels in 0..{num_classes - 1} or null")
    return kept


def check_size(name: str, shape: tuple[int, int, int], image_size: int | None, resize: str) -> None:
    """Padding can only grow an image and cropping only shrink it: check against the native size."""
    # An image folder's native shape is its first image's; the others are checked per item.
    if image_size is None:
        return
    _, h, w = shape
    s = image_size
    if (resize == "pad" and (h > s or w > s)) or (resize == "center_crop" and (h < s or w < s)):
        raise not_allowed("image_size", s, f"{name} is {h}x{w} and data.resize={resize!r}; "
                                           f"use data.resize='resize' or another size")


def check_image_shape(data_shape, model_shape, data_name: str) -> None:
    """The data group's images must be the shape the checkpoint's model takes."""
    if tuple(data_shape) != tuple(model_shape):
        raise ConfigError(f"data={data_name!r} is not allowed: its images are {tuple(data_shape)} but the "
                          f"checkpoint's model takes {tuple(model_shape)}: pass the data group (and "
                          f"data.image_size) the model was trained on")
