"""Sample from any train.py checkpoint: one task, PNG grids into the run directory (outputs/sample/<time>/).

    python sample.py ckpt_path=<run>/checkpoints/last.ckpt                         # 64 samples at T=0.7
    python sample.py ckpt_path=... task=temperature                                # a row per T, same noise
    python sample.py ckpt_path=... task=interpolate indices=[0,1,2,3] mode=slerp   # test images 0-1 and 2-3
    python sample.py ckpt_path=... task=interpolate images=[a.png,b.png]
    python sample.py ckpt_path=... task=reconstruct n=16                           # exact decode(encode(x))
    python sample.py ckpt_path=... task=class classes=[3,8] n=16                   # class-conditional models
    python sample.py ckpt_path=... task=manipulate attribute=8 baseline=3          # MNIST 3 -> 8 direction
    python sample.py ckpt_path=... task=manipulate data=celeba data.target=attr attribute=Smiling
    python sample.py ckpt_path=... task=inpaint mask=center mask_size=14 indices=[0,1,2,3] n=8   # c-Glow or MCMC
    python sample.py ckpt_path=... task=inpaint images=[a.png] method=map

Common options: seed=0 device=auto|cpu|cuda batch_size=64 n=... ema=true. Tasks that read real
images by index use the test split of the ``data`` group (default mnist): pass the one the model was
trained on. The EMA weights are used when the checkpoint has them; everything runs in float32. A
non-finite image is reported with a warning and left grey in its grid, never written silently.
A bad option stops the run with one line, ``config error: ...``, and exit code 2.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import hydra
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm import tqdm

from glow import sampling
from glow.config import ConfigError, exit_with_config_error, unwrap
from glow.data import fit_size, read_image
from glow.inpaint import METHODS
from glow.masks import MASK_KINDS, make_mask
from glow.model import Glow
from glow.quantize import preprocess

TASKS = ("sample", "temperature", "interpolate", "reconstruct", "class", "manipulate", "inpaint")
DEVICES = ("auto", "cpu", "cuda")
SPLITS = ("test", "train")
DEFAULT_N = {"sample": 64, "temperature": 8, "interpolate": 4, "reconstruct": 16, "class": 8, "manipulate": 4, "inpaint": 8}
RECONSTRUCTION_PAIRS_PER_ROW = 8


# -- validation: every bad value is one line naming the key and what is allowed -------------------
def _fail(key: str, value, allowed: str):
    raise ConfigError(f"{key}={_show(value)} is not allowed: {allowed}")


def _show(value) -> str:
    if isinstance(value, (ListConfig, DictConfig)):
        value = OmegaConf.to_container(value)
    return repr(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_list(key: str, value, minimum: int = 0) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple, ListConfig)) or not value \
            or not all(_is_int(v) and v >= minimum for v in value):
        _fail(key, value, f"use a non-empty list of integers >= {minimum}, e.g. [0,1], or null")
    return [int(v) for v in value]


def validate(cfg: DictConfig) -> None:
    """Config-only checks, before anything is loaded."""
    if cfg.get("task") not in TASKS:
        _fail("task", cfg.get("task"), "use one of " + ", ".join(TASKS))
    ckpt = cfg.get("ckpt_path")
    if ckpt is None or not Path(str(ckpt)).is_file():
        _fail("ckpt_path", ckpt, "give the path of a checkpoint written by train.py, "
                                 "e.g. ckpt_path=outputs/mnist/<run>/checkpoints/last.ckpt")
    if cfg.get("device") not in DEVICES:
        _fail("device", cfg.get("device"), "use one of " + ", ".join(DEVICES))
    if cfg.device == "cuda" and not torch.cuda.is_available():
        _fail("device", cfg.device, "CUDA is not available on this machine: use auto or cpu")
    if not _is_int(cfg.get("seed")):
        _fail("seed", cfg.get("seed"), "use an integer")
    for key in ("batch_size", "direction_images"):
        if not (_is_int(cfg.get(key)) and cfg.get(key) >= 1):
            _fail(key, cfg.get(key), "use a positive integer")
    for key in ("n", "nrow"):
        value = cfg.get(key)
        if value is not None and not (_is_int(value) and value >= 1):
            _fail(key, value, "use a positive integer, or null for the task's default")
    if not (_is_number(cfg.get("temperature")) and cfg.temperature >= 0):
        _fail("temperature", cfg.get("temperature"), "use a number >= 0 (0: the mode of every prior; 1: the model)")
    temps = cfg.get("temperatures")
    if not isinstance(temps, (list, ListConfig)) or not temps or not all(_is_number(t) and t >= 0 for t in temps):
        _fail("temperatures", temps, "use a non-empty list of numbers >= 0, e.g. [0,0.5,0.7,1.0]")
    scales = cfg.get("scales")
    if not isinstance(scales, (list, ListConfig)) or not scales or not all(_is_number(s) for s in scales):
        _fail("scales", scales, "use a non-empty list of numbers, e.g. [-1,-0.5,0,0.5,1]")
    if cfg.get("mode") not in sampling.INTERPOLATION_MODES:
        _fail("mode", cfg.get("mode"), "use one of " + ", ".join(sampling.INTERPOLATION_MODES))
    if not (_is_int(cfg.get("steps")) and cfg.steps >= 2):
        _fail("steps", cfg.get("steps"), "use an integer >= 2 (both end points included)")
    if cfg.get("split") not in SPLITS:
        _fail("split", cfg.get("split"), "use one of " + ", ".join(SPLITS))
    if cfg.get("label") is not None and not (_is_int(cfg.label) and cfg.label >= 0):
        _fail("label", cfg.label, "use a class label >= 0, or null")
    _int_list("classes", cfg.get("classes"))
    indices = _int_list("indices", cfg.get("indices"))
    images = cfg.get("images")
    if images is not None:
        if not isinstance(images, (list, ListConfig)) or not images:
            _fail("images", images, "use a non-empty list of image files, e.g. [a.png,b.png], or null")
        for path in images:
            if not Path(str(path)).is_file():
                _fail("images", images, f"{path} is not a file: give existing image files")
        if indices is not None:
            _fail("indices", indices, "give either images or indices, not both")
    if cfg.task == "interpolate":
        given = list(images) if images is not None else indices
        if given is not None and len(given) % 2:
            _fail("images" if images is not None else "indices", given,
                  "task=interpolate pairs them up (first-second, third-fourth, ...): give an even number")
    if cfg.task == "manipulate" and cfg.get("attribute") is None:
        _fail("attribute", None, "task=manipulate needs one: a CelebA attribute name or index (data.target=attr), "
                                 "or a class label, e.g. attribute=8 baseline=3")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_model(cfg: DictConfig, model: Glow) -> None:
    """Checks that need the checkpoint's model."""
    if cfg.task == "inpaint":
        if cfg.method not in METHODS:
            _fail("method", cfg.method, "use one of " + ", ".join(METHODS))
        if cfg.mask not in MASK_KINDS:
            _fail("mask", cfg.mask, "use one of " + ", ".join(MASK_KINDS))
        if cfg.method == "cglow" and model.conditional != "image":
            _fail("method", cfg.method, "this checkpoint is not an inpainting model (model.conditional=image): "
                                        "use auto, mcmc or map")
        if cfg.method in ("mcmc", "map") and model.conditional is not None:
            _fail("method", cfg.method, f"MCMC needs an unconditional model; this one is "
                                        f"conditional={model.conditional}: use auto")
    if cfg.task in ("sample", "temperature", "class") and model.conditional == "image":
        _fail("task", cfg.task, "this checkpoint is an inpainting model (model.conditional=image): it samples "
                                "given a masked image; use interpolate, reconstruct or manipulate")
    if cfg.task == "class" and model.conditional != "class":
        _fail("task", cfg.task, f"this checkpoint is not class-conditional (model.conditional="
                                f"{model.conditional or 'null'}); train one with experiment=mnist_class")
    for key in ("label", "classes"):
        value = cfg.get(key)
        if value is None:
            continue
        if model.conditional != "class":
            _fail(key, value, "only a class-conditional checkpoint takes labels: use null")
        values = [value] if _is_int(value) else list(value)
        if any(v >= model.num_classes for v in values):
            _fail(key, value, f"use labels in 0..{model.num_classes - 1} (this model's classes)")


# -- real images -------------------------------------------------------------------------------


def datamodule(cfg: DictConfig, model: Glow):
    """The data group's module, set up, checked against the model's image shape."""
    try:
        dm = instantiate(cfg.data)
        dm.prepare_data()
        dm.setup()
    except (ValueError, FileNotFoundError, RuntimeError, InstantiationException) as err:
        err = unwrap(err)
        if isinstance(err, (ValueError, FileNotFoundError, RuntimeError)):
            raise ConfigError(str(err).strip().splitlines()[0]) from err
        raise
    if tuple(dm.image_shape) != tuple(model.image_shape):
        _fail("data", cfg.data.name, f"its images are {tuple(dm.image_shape)} but the checkpoint's model takes "
                                     f"{tuple(model.image_shape)}: pass the data group (and data.image_size) "
                                     f"the model was trained on")
    return dm


def _take(dataset, indices: list[int], key: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    bad = [i for i in indices if i >= len(dataset)]
    if bad:
        _fail(key, indices, f"the {split} split has {len(dataset)} images: use indices in 0..{len(dataset) - 1}")
    items = dataset.subset(torch.tensor(indices, dtype=torch.long), flip=False)
    xs, ys = zip(*(items[i] for i in range(len(items))))
    return torch.stack(xs), torch.stack(ys)


def image_files(paths, model: Glow, resize: str) -> torch.Tensor:
    """uint8 [N, C, H, W] of image files, fitted to the model's size the data group's way."""
    c, h, w = model.image_shape
    out = []
    for path in paths:
        x = read_image(str(path), "L" if c == 1 else "RGB")
        if tuple(x.shape[-2:]) != (h, w):
            try:
                x = fit_size(x, h, resize)
            except ValueError as err:
                _fail("images", list(paths), f"{path}: {err}")
        out.append(x)
    return torch.stack(out)


def real_images(cfg: DictConfig, model: Glow, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images (and labels, or None for files): ``images``, else ``indices``, else the first ``count``."""
    if cfg.images is not None:
        return image_files(list(cfg.images), model, cfg.data.get("resize", "resize")), None
    dm = datamodule(cfg, model)
    dataset = dm.test_set if cfg.split == "test" else dm.train_set
    indices = list(cfg.indices) if cfg.indices is not None else list(range(min(count, len(dataset))))
    return _take(dataset, indices, "indices", cfg.split)


def condition(model: Glow, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    """What encode/decode need. Under class conditioning the flow ignores the labels (they enter the
    priors only), so latents and reconstructions do not depend on them; an inpainting model gets a
    condition with nothing observed."""
    if model.conditional == "class":
        ok = labels is not None and labels.dim() == 1 and bool((labels < model.num_classes).all())
        return labels.long() if ok else torch.zeros(x.shape[0], dtype=torch.long)
    if model.conditional == "image":
        return Glow.make_condition(x, torch.ones(x.shape[0], 1, *x.shape[-2:]))
    return None


def sampling_labels(cfg: DictConfig, model: Glow, n: int) -> torch.Tensor | None:
    if model.conditional != "class":
        return None
    if cfg.label is not None:
        return torch.full((n,), int(cfg.label), dtype=torch.long)
    return torch.arange(n) % model.num_classes


# -- the tasks: each returns (images, images per row, what the rows are) -------------------------
def task_sample(cfg, model, n, generator):
    images = sampling.sample(model, n, cfg.temperature, generator, sampling_labels(cfg, model, n), cfg.batch_size)
    return images, cfg.nrow or math.ceil(math.sqrt(n)), f"{n} samples at T={cfg.temperature}"


def task_temperature(cfg, model, n, generator):
    temps = [float(t) for t in cfg.temperatures]
    images = sampling.temperature_sweep(model, temps, n, generator, sampling_labels(cfg, model, n), cfg.batch_size)
    return images, n, f"one row per temperature {temps}, the same noise in every row"


def task_class(cfg, model, n, generator):
    classes = list(cfg.classes) if cfg.classes is not None else list(range(model.num_classes))
    images = sampling.class_grid(model, classes, n, cfg.temperature, generator, cfg.batch_size)
    return images, n, f"one row per class {classes} at T={cfg.temperature}, the same noise in every row"


def task_interpolate(cfg, model, n, generator):
    x_uint8, labels = real_images(cfg, model, 2 * n)
    x = preprocess(x_uint8, model.n_bits, dequantize=False)
    cond = condition(model, x, labels)
    x_a, x_b = x[0::2], x[1::2]
    cond_a = cond[0::2] if cond is not None else None
    images = sampling.interpolate(model, x_a, x_b, cfg.steps, cfg.mode, cond_a, cfg.batch_size)
    rows = images.view(x_a.shape[0], cfg.steps, *x.shape[1:])
    error = max((rows[:, 0] - x_a).abs().max().item(), (rows[:, -1] - x_b).abs().max().item())
    return images, cfg.steps, f"{x_a.shape[0]} {cfg.mode} interpolations, end point error {error:.1e}"


def task_reconstruct(cfg, model, n, generator):
    x_uint8, labels = real_images(cfg, model, n)
    x = preprocess(x_uint8, model.n_bits, dequantize=False)
    images = sampling.reconstruction_pairs(model, x, condition(model, x, labels), cfg.batch_size)
    error = (images[1::2] - images[0::2]).abs().max().item()
    nrow = 2 * min(x.shape[0], RECONSTRUCTION_PAIRS_PER_ROW)
    return images, nrow, f"{x.shape[0]} originals | reconstructions, max error {error:.1e}"


def _resolve_attribute(cfg, dm) -> tuple[int, str, bool]:
    """-> (column or class label, its name, whether it is a CelebA attribute)."""
    attribute = cfg.attribute
    names = dm.attribute_names if getattr(dm, "target", "class") == "attr" else None
    pool = names if names is not None else dm.class_names
    if _is_int(attribute) and 0 <= attribute < len(pool):
        index = int(attribute)
    elif str(attribute) in pool:
        index = pool.index(str(attribute))
    else:
        what = "a CelebA attribute name or index 0..39" if names is not None else \
            f"a class label 0..{len(pool) - 1} of {cfg.data.name} (or data.target=attr on celeba)"
        _fail("attribute", attribute, f"use {what}")
    return index, pool[index], names is not None


def task_manipulate(cfg, model, n, generator):
    dm = datamodule(cfg, model)
    index, name, is_attr = _resolve_attribute(cfg, dm)
    if is_attr and cfg.baseline is not None:
        _fail("baseline", cfg.baseline, "CelebA attributes are present or absent: use null")
    if not is_attr and cfg.baseline is not None:
        if not (_is_int(cfg.baseline) and 0 <= cfg.baseline < dm.num_classes and cfg.baseline != index):
            _fail("baseline", cfg.baseline, f"use a class label 0..{dm.num_classes - 1} other than attribute={index}")

    def groups(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if is_attr:
            has = labels[:, index] == 1
            return has, ~has
        has = labels == index
        return has, (labels == cfg.baseline) if cfg.baseline is not None else ~has

    # the direction, from training images
    train = dm.train_set
    has, without = groups(train.labels)
    picked = torch.cat([has.nonzero()[:cfg.direction_images, 0], without.nonzero()[:cfg.direction_images, 0]])
    if not has.any() or not without.any():
        _fail("attribute", cfg.attribute, f"the training split needs images with and without it "
                                          f"(found {int(has.sum())} with, {int(without.sum())} without)")
    x_uint8, labels = _take(train, picked.tolist(), "direction_images", "train")
    x = preprocess(x_uint8, model.n_bits, dequantize=False)
    direction = sampling.attribute_direction(model, x, has[picked], condition(model, x, labels), cfg.batch_size)

    # the images to edit: given, else the first n test images without the attribute
    if cfg.images is None and cfg.indices is None:
        _, test_without = groups(dm.test_set.labels)
        chosen = test_without.nonzero()[:n, 0].tolist()
        x_uint8, labels = _take(dm.test_set, chosen, "indices", "test")
    else:
        x_uint8, labels = real_images(cfg, model, n)
    x = preprocess(x_uint8, model.n_bits, dequantize=False)
    scales = [float(s) for s in cfg.scales]
    images = sampling.manipulate(model, x, direction, scales, condition(model, x, labels), cfg.batch_size)
    away = f" (from {cfg.baseline})" if cfg.baseline is not None else ""
    return images, len(scales), (f"{x.shape[0]} images moved along the '{name}'{away} direction at scales "
                                 f"{scales}, from {int(has[picked].sum())} + {int((~has[picked]).sum())} images")


def task_inpaint(cfg, model, n, generator):
    x_uint8, _ = real_images(cfg, model, cfg.inpaint_images)
    h, w = x_uint8.shape[-2:]
    fraction = cfg.mask_size / h if cfg.mask == "center" and cfg.mask_size else cfg.center_fraction
    mask = make_mask(cfg.mask, x_uint8.shape[0], (h, w), center_fraction=fraction, pixel_rate=cfg.pixel_rate,
                     generator=generator)
    device = sampling.model_device(model)
    x = preprocess(x_uint8, model.n_bits, dequantize=False).to(device)
    with tqdm(total=cfg.mcmc_steps, desc="MCMC", unit="step", disable=model.conditional == "image"
              or cfg.method == "cglow") as bar:
        result = sampling.inpaint(model, x, mask.to(device), n=n, method=cfg.method,
                                  temperature=cfg.inpaint_temperature, steps=cfg.mcmc_steps,
                                  step_size=cfg.step_size, map_steps=cfg.map_steps, init=cfg.init,
                                  generator=generator, progress=lambda step: bar.update(1))
    filled = sampling.completions_uint8(result, x_uint8, mask, model.n_bits)  # observed pixels bit-exact
    masked = torch.where(mask.expand_as(x_uint8).bool(), torch.full_like(x_uint8, 128), x_uint8)
    rows = torch.cat([x_uint8.unsqueeze(1), masked.unsqueeze(1), filled], 1).flatten(0, 1)
    images = preprocess(rows, model.n_bits, dequantize=False)
    rate = f", MCMC acceptance rate {result.acceptance_rate:.2f}" if result.acceptance_rate is not None else ""
    return images, n + 2, (f"{x_uint8.shape[0]} rows of original | masked | {n} completions "
                           f"({result.method}, mask={cfg.mask}{rate})")


TASK_FUNCTIONS = {"sample": task_sample, "temperature": task_temperature, "interpolate": task_interpolate,
                  "reconstruct": task_reconstruct, "class": task_class, "manipulate": task_manipulate,
                  "inpaint": task_inpaint}


def output_name(cfg: DictConfig) -> str:
    return f"interpolate_{cfg.mode}.png" if cfg.task == "interpolate" else f"{cfg.task}.png"


# -- entry -------------------------------------------------------------------------------------


def run(cfg: DictConfig) -> dict:
    """Run one task; returns {"task", "path", "rows", "cols", "count", "nonfinite", "summary"}."""
    try:
        validate(cfg)
        device = pick_device(cfg.device)
        torch.manual_seed(cfg.seed)
        model = sampling.load(cfg.ckpt_path, use_ema=cfg.ema).to(device)
        check_model(cfg, model)
        generator = torch.Generator().manual_seed(cfg.seed)  # CPU draws: the same noise on any device
        n = cfg.n or DEFAULT_N[cfg.task]
        images, nrow, summary = TASK_FUNCTIONS[cfg.task](cfg, model, n, generator)
    except ConfigError as err:
        exit_with_config_error(err)

    images, bad = sampling.blank_nonfinite(images)
    path = Path(cfg.paths.output_dir) / output_name(cfg)
    if bad:
        print(f"warning: {bad} of {images.shape[0]} images are non-finite (NaN or inf); they are left grey "
              f"in {path}", file=sys.stderr)
    sampling.save_grid(images, path, n_bits=model.n_bits, nrow=nrow)
    rows, cols = sampling.grid_shape(images.shape[0], nrow)
    print(f"{path}  ({rows}x{cols} grid: {summary})")
    return {"task": cfg.task, "path": str(path), "rows": rows, "cols": cols, "count": images.shape[0],
            "nonfinite": bad, "summary": summary}


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
