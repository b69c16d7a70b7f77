"""sample.py's tasks: each turns the config into calls of glow.sampling and returns
(images in model space, images per row, a one-line summary of what the rows are).

Real images come from the ``images`` files, else the ``indices`` of the data group's split, else its
first images; a bad value raises glow.config.ConfigError with one line.
"""

from __future__ import annotations

import math
from pathlib import Path
import time

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from glow.conditioning import encoding_condition, grid_labels, inpaint_method
from glow.config import ConfigError, check_image_shape, fail, is_int, unwrap
from glow.data import fit_size, read_image
from glow.masks import make_mask
from glow.model import Glow
from glow.quantize import preprocess
from glow.sampling.batched import model_device
from glow.sampling.grids import class_grid, reconstruction_pairs, sample, temperature_sweep
from glow.sampling.inpaint import completions_uint8, inpaint
from glow.sampling.interpolate import interpolate
from glow.sampling.manipulate import attribute_direction, manipulate
from glow.sampling.user_mask import read_mask, save_completions, to_model_size, to_original_size

DEFAULT_N = {"sample": 64, "temperature": 8, "interpolate": 4, "reconstruct": 16, "class": 8, "manipulate": 4,
             "inpaint": 8}
RECONSTRUCTION_PAIRS_PER_ROW = 8


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
    check_image_shape(dm.image_shape, model.image_shape, cfg.data.name)
    return dm


def _take(dataset, indices: list[int], key: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    bad = [i for i in indices if i >= len(dataset)]
    if bad:
        fail(key, indices, f"the {split} split has {len(dataset)} images: use indices in 0..{len(dataset) - 1}")
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
                fail("images", list(paths), f"{path}: {err}")
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


def task_sample(cfg, model, n, generator):
    start = time.perf_counter()
    images = sample(model, n, cfg.temperature, generator, grid_labels(model, n, cfg.label), cfg.batch_size)
    per_image = (time.perf_counter() - start) / n
    return images, cfg.nrow or math.ceil(math.sqrt(n)), (f"{n} samples at T={cfg.temperature}, "
                                                         f"{1000 * per_image:.2f} ms per image")


def task_temperature(cfg, model, n, generator):
    temps = [float(t) for t in cfg.temperatures]
    images = temperature_sweep(model, temps, n, generator, grid_labels(model, n, cfg.label), cfg.batch_size)
    return images, n, f"one row per temperature {temps}, the same noise in every row"


def task_class(cfg, model, n, generator):
    classes = list(cfg.classes) if cfg.classes is not None else list(range(model.num_classes))
    images = class_grid(model, classes, n, cfg.temperature, generator, cfg.batch_size)
    return images, n, f"one row per class {classes} at T={cfg.temperature}, the same noise in every row"


def task_interpolate(cfg, model, n, generator):
    x_uint8, labels = real_images(cfg, model, 2 * n)
    x = preprocess(x_uint8, model.n_bits, dequantize=False)
    cond = encoding_condition(model, x, labels)
    x_a, x_b = x[0::2], x[1::2]
    cond_a = cond[0::2] if cond is not None else None
    images = interpolate(model, x_a, x_b, cfg.points, cfg.mode, cond_a, cfg.batch_size)
    rows = images.view(x_a.shape[0], cfg.points, *x.shape[1:])
    error = max((rows[:, 0] - x_a).abs().max().item(), (rows[:, -1] - x_b).abs().max().item())
    return images, cfg.points, f"{x_a.shape[0]} {cfg.mode} interpolations, end point error {error:.1e}"


def task_reconstruct(cfg, model, n, generator):
    x_uint8, labels = real_images(cfg, model, n)
    x = preprocess(x_uint8, model.n_bits, dequantize=False)
    images = reconstruction_pairs(model, x, encoding_condition(model, x, labels), cfg.batch_size)
    error = (images[1::2] - images[0::2]).abs().max().item()
    nrow = 2 * min(x.shape[0], RECONSTRUCTION_PAIRS_PER_ROW)
    return images, nrow, f"{x.shape[0]} originals | reconstructions, max error {error:.1e}"


def _resolve_attribute(cfg, dm) -> tuple[int, str, bool]:
    """-> (column or class label, its name, whether it is a CelebA attribute)."""
    attribute = cfg.attribute
    names = dm.attribute_names if getattr(dm, "target", "class") == "attr" else None
    pool = names if names is not None else dm.class_names
    if is_int(attribute) and 0 <= attribute < len(pool):
        index = int(attribute)
    elif str(attribute) in pool:
        index = pool.index(str(attribute))
    else:
        what = "a CelebA attribute name or index 0..39" if names is not None else \
            f"a class label 0..{len(pool) - 1} of {cfg.data.name} (or data.target=attr on celeba)"
        fail("attribute", attribute, f"use {what}")
    return index, pool[index], names is not None


def task_manipulate(cfg, model, n, generator):
    dm = datamodule(cfg, model)
    index, name, is_attr = _resolve_attribute(cfg, dm)
    if is_attr and cfg.baseline is not None:
        fail("baseline", cfg.baseline, "CelebA attributes are present or absent: use null")
    if not is_attr and cfg.baseline is not None:
        if not (is_int(cfg.baseline) and 0 <= cfg.baseline < dm.num_classes and cfg.baseline != index):
            fail("baseline", cfg.baseline, f"use a class label 0..{dm.num_classes - 1} other than attribute={index}")

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
        fail("attribute", cfg.attribute, f"the training split needs images with and without it "
                                          f"(found {int(has.sum())} with, {int(without.sum())} without)")
    x_uint8, labels = _take(train, picked.tolist(), "direction_images", "train")
    x = preprocess(x_uint8, model.n_bits, dequantize=False)
    direction = attribute_direction(model, x, has[picked], encoding_condition(model, x, labels), cfg.batch_size)

    # the images to edit: given, else the first n test images without the attribute
    if cfg.images is None and cfg.indices is None:
        _, test_without = groups(dm.test_set.labels)
        chosen = test_without.nonzero()[:n, 0].tolist()
        x_uint8, labels = _take(dm.test_set, chosen, "indices", "test")
    else:
        x_uint8, labels = real_images(cfg, model, n)
    x = preprocess(x_uint8, model.n_bits, dequantize=False)
    scales = [float(s) for s in cfg.scales]
    images = manipulate(model, x, direction, scales, encoding_condition(model, x, labels), cfg.batch_size)
    away = f" (from {cfg.baseline})" if cfg.baseline is not None else ""
    return images, len(scales), (f"{x.shape[0]} images moved along the '{name}'{away} direction at scales "
                                 f"{scales}, from {int(has[picked].sum())} + {int((~has[picked]).sum())} images")


def _user_images_and_masks(cfg, model) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """task=inpaint with mask_image: the originals, their masks, and both at the model's size."""
    c, h, w = model.image_shape
    pad = cfg.data.get("resize", "resize") == "pad"
    originals, masks, xs, ms = [], [], [], []
    for path in cfg.images:
        image = read_image(str(path), "L" if c == 1 else "RGB")
        try:
            mask = read_mask(str(cfg.mask_image), tuple(image.shape[-2:]))
        except ValueError as err:
            fail("mask_image", cfg.mask_image, str(err))
        x, m = to_model_size(image, mask, (h, w), pad)
        originals.append(image), masks.append(mask), xs.append(x), ms.append(m)
    return originals, masks, torch.stack(xs), torch.stack(ms)


def task_inpaint(cfg, model, n, generator):
    user_mask = cfg.get("mask_image") is not None
    if user_mask:
        originals, masks, x_uint8, mask = _user_images_and_masks(cfg, model)
    else:
        x_uint8, _ = real_images(cfg, model, cfg.inpaint_images)
        h, w = x_uint8.shape[-2:]
        fraction = cfg.mask_size / h if cfg.mask == "center" and cfg.mask_size else cfg.center_fraction
        mask = make_mask(cfg.mask, x_uint8.shape[0], (h, w), center_fraction=fraction, pixel_rate=cfg.pixel_rate,
                         generator=generator)
    device = model_device(model)
    x = preprocess(x_uint8, model.n_bits, dequantize=False).to(device)
    method = inpaint_method(model, cfg.method)
    with tqdm(total=cfg.mcmc_steps or 40, desc="MCMC", unit="step", disable=method == "cglow") as bar:
        result = inpaint(model, x, mask.to(device), n=n, method=cfg.method,
                                  temperature=cfg.inpaint_temperature, steps=cfg.mcmc_steps,
                                  step_size=cfg.step_size, map_steps=cfg.map_steps, init=cfg.init,
                                  generator=generator, progress=lambda step: bar.update(1))
    filled = completions_uint8(result, x_uint8, mask, model.n_bits)  # observed pixels bit-exact
    written = []
    if user_mask:  # the completions at the original size; the user's observed pixels untouched
        pad = cfg.data.get("resize", "resize") == "pad"
        for path, original, m, completions in zip(cfg.images, originals, masks, filled):
            back = to_original_size(completions, original, m, pad)
            written += save_completions(back, Path(str(path)).stem, Path(cfg.paths.output_dir))
    masked = torch.where(mask.expand_as(x_uint8).bool(), torch.full_like(x_uint8, 128), x_uint8)
    rows = torch.cat([x_uint8.unsqueeze(1), masked.unsqueeze(1), filled], 1).flatten(0, 1)
    images = preprocess(rows, model.n_bits, dequantize=False)
    rate = f", MCMC acceptance rate {result.acceptance_rate:.2f}" if result.acceptance_rate is not None else ""
    where = f"; {len(written)} completions at the original size in {written[0].parent}" if written else ""
    return images, n + 2, (f"{x_uint8.shape[0]} rows of original | masked | {n} completions "
                           f"({result.method}, mask={cfg.mask_image if user_mask else cfg.mask}{rate}{where})")


TASK_FUNCTIONS = {"sample": task_sample, "temperature": task_temperature, "interpolate": task_interpolate,
                  "reconstruct": task_reconstruct, "class": task_class, "manipulate": task_manipulate,
                  "inpaint": task_inpaint}


def output_name(cfg: DictConfig) -> str:
    return f"interpolate_{cfg.mode}.png" if cfg.task == "interpolate" else f"{cfg.task}.png"
