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
from glow.data.screening import probe
from glow.masks import MASK_KINDS
from glow.presets import check_hydra_run
from glow.sampling.interpolate import INTERPOLATION_MODES
from glow.sampling.tasks import TASKS

PRECISIONS = ("auto", "32-true", "32", "64-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true")  # auto: glow.precision
MAX_SEED = 2 ** 32 - 1  # Lightning's seed range: beyond it seed_everything picks a random seed and only warns
GPU_ACCELERATORS = ("gpu", "cuda")
EXAMPLES = {"data.path": "<folder of images> (<path>/<class>/<image>, or <path>/train/... and test/...)",
            "ckpt_path": "outputs/<task>/<run>/checkpoints/last.ckpt"}


def require_values(cfg: DictConfig) -> None:
    """Every mandatory value (``???``, e.g. data.path of data=imagefolder) is given, or one line naming it."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        fail(key, "???", f"it has no default: give it, e.g. {key}={EXAMPLES.get(key, '...')}")


def check_seed(key: str, value) -> None:
    if not (is_int(value) and 0 <= value <= MAX_SEED):
        fail(key, value, f"use an integer in 0..{MAX_SEED}")


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


def validate_trainer(trainer: DictConfig) -> None:
    """trainer.* keys that Lightning would reject with a traceback (or accept and misbehave on)."""
    _positive_int("trainer.max_steps", trainer.get("max_steps"), allow_minus_one=True)
    precision = str(trainer.get("precision"))
    if precision not in PRECISIONS:
        fail("trainer.precision", precision, "use one of " + ", ".join(PRECISIONS))
    interval = trainer.get("val_check_interval")
    if interval is not None and not ((is_int(interval) and interval >= 1)
                                     or (is_number(interval) and isinstance(interval, float) and 0 < interval <= 1)):
        fail("trainer.val_check_interval", interval, "use a number of steps >= 1 (or a fraction of an epoch in (0, 1])")
    accelerator = str(trainer.get("accelerator"))
    if accelerator in GPU_ACCELERATORS:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        devices = trainer.get("devices")
        if count == 0:
            fail("trainer.accelerator", accelerator, "torch sees no CUDA GPU on this machine: use trainer=cpu")
        if is_int(devices) and devices > count:
            fail("trainer.devices", devices, f"this machine has {count} CUDA GPU(s)")


def validate_train(cfg: DictConfig) -> None:
    require_values(cfg)
    check_hydra_run()  # an experiment must not silently override a model chosen on the command line
    check_seed("seed", cfg.get("seed"))
    validate_model(cfg.model)
    # the best checkpoint (monitor val/bpd) and the sample grids need validation images
    val = cfg.data.get("val_fraction")
    if not (is_number(val) and 0 < val < 1):
        fail("data.val_fraction", val, "use a number in (0, 1): training needs validation images "
                                       "(best checkpoint by val/bpd, sample grids)")
    validate_trainer(cfg.trainer)
    validate_ckpt_path(cfg.get("ckpt_path"))


# -- sample.py -------------------------------------------------------------------------------------
DEVICES = ("auto", "cpu", "cuda")
SPLITS = ("test", "train")
MAX_N = 4096              # images (or rows, pairs) per run: a grid, not a data set (the page caps n at 256)
MAX_BATCH = 4096          # images per forward pass
MAX_LIST = 256            # temperatures, scales, classes, indices, images; points per interpolation
MAX_OUTPUT_BYTES = 2 ** 30  # the float32 images of one grid, in memory at once


def check_image_file(key: str, path) -> None:
    """A regular, readable image file of a sane size, from its header (a FIFO would block, a bomb allocate)."""
    if not Path(str(path)).is_file():
        fail(key, str(path), "is not a (regular) file: give an existing image file")
    problem = probe(str(path))
    if isinstance(problem, str):
        fail(key, str(path), f"is not a readable image ({problem}): give a PNG or JPEG")


def grid_images(cfg: DictConfig, n: int, num_classes: int) -> int:
    """At most how many images ``cfg.task`` puts in its grid for ``n`` (each row's images times the rows)."""
    given = cfg.get("images") or cfg.get("indices")
    rows = {"temperature": len(cfg.temperatures), "class": len(cfg.classes) if cfg.get("classes") else num_classes,
            "interpolate": cfg.points, "reconstruct": 2, "manipulate": len(cfg.scales) + 1}.get(cfg.task, 1)
    if cfg.task == "inpaint":
        return (n + 2) * (len(given) if given else cfg.inpaint_images)
    return n * rows


def check_output_size(cfg: DictConfig, model, default_n: int) -> None:
    """The grid of this task for this checkpoint's image size fits in MAX_OUTPUT_BYTES, or one line naming n."""
    n = cfg.n or default_n
    count = grid_images(cfg, n, max(1, model.kind.num_classes or 1))
    per_image = 4 * model.num_dims
    if count * per_image > MAX_OUTPUT_BYTES:
        most = max(1, n * (MAX_OUTPUT_BYTES // per_image) // count)
        fail("n", n, f"task={cfg.task} would hold {count} images of {'x'.join(map(str, model.image_shape))} "
                     f"({count * per_image / 2 ** 30:.1f} GiB) at once: use n <= {most}")


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
    validate_ckpt_path(cfg.get("ckpt_path"), required=True)
    require_values(cfg)
    _choice(cfg, "task", tuple(TASKS))
    _choice(cfg, "device", DEVICES)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        fail("device", cfg.device, "CUDA is not available on this machine: use auto or cpu")
    check_seed("seed", cfg.get("seed"))
    for key in ("batch_size", "direction_images", "inpaint_images"):
        _positive_int(key, cfg.get(key))
    if cfg.batch_size > MAX_BATCH:
        fail("batch_size", cfg.batch_size, f"use at most {MAX_BATCH} images per forward pass")
    for key in ("n", "nrow"):
        value = cfg.get(key)
        if value is not None and not (is_int(value) and 1 <= value <= MAX_N):
            fail(key, value, f"use an integer in 1..{MAX_N}, or null for the task's default")
    if cfg.inpaint_images > MAX_LIST:
        fail("inpaint_images", cfg.inpaint_images, f"use at most {MAX_LIST}")
    for key in ("temperatures", "scales", "classes", "indices", "images"):
        value = cfg.get(key)
        if isinstance(value, (list, ListConfig)) and len(value) > MAX_LIST:
            fail(key, f"[{len(value)} items]", f"give at most {MAX_LIST}")
    if not (is_number(cfg.get("temperature")) and cfg.temperature >= 0):
        fail("temperature", cfg.get("temperature"), "use a number >= 0 (0: the mode of every prior; 1: the model)")
    _number_list("temperatures", cfg.get("temperatures"), 0, "[0,0.5,0.7,1.0]")
    _number_list("scales", cfg.get("scales"), None, "[-1,-0.5,0,0.5,1]")
    _choice(cfg, "mode", INTERPOLATION_MODES)
    if not (is_int(cfg.get("points")) and 2 <= cfg.points <= MAX_LIST):
        fail("points", cfg.get("points"), f"use an integer in 2..{MAX_LIST} (both end points included)")
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
            check_image_file("images", path)
        if indices is not None:
            fail("indices", indices, "give either images or indices, not both")
    mask_image = cfg.get("mask_image")
    if mask_image is not None:
        if cfg.task != "inpaint":
            fail("mask_image", mask_image, "only task=inpaint takes a mask image: use null")
        check_image_file("mask_image", mask_image)
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
