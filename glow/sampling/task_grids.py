"""sample.py's grid tasks: samples, temperature rows, class rows, interpolations, reconstructions.
Each returns (images in model space, images per row, a one-line summary)."""

from __future__ import annotations

import math
import time

from glow.conditioning import encoding_condition, grid_labels
from glow.quantize import preprocess
from glow.sampling.grids import class_grid, reconstruction_pairs, sample, temperature_sweep
from glow.sampling.interpolate import interpolate
from glow.sampling.task_inputs import real_images

RECONSTRUCTION_PAIRS_PER_ROW = 8


def task_sample(cfg, model, n, generator):
    start = time.perf_counter()
    images = sample(model, n, cfg.temperature, generator, grid_labels(model, n, cfg.label), cfg.batch_size,
                    progress="sampling")
    per_image = (time.perf_counter() - start) / n
    return images, cfg.nrow or math.ceil(math.sqrt(n)), (f"{n} samples at T={cfg.temperature}, "
                                                         f"{1000 * per_image:.2f} ms per image")


def task_temperature(cfg, model, n, generator):
    temps = [float(t) for t in cfg.temperatures]
    images = temperature_sweep(model, temps, n, generator, grid_labels(model, n, cfg.label), cfg.batch_size,
                               progress="sampling")
    return images, n, f"one row per temperature {temps}, the same noise in every row"


def task_class(cfg, model, n, generator):
    classes = list(cfg.classes) if cfg.classes is not None else list(range(model.kind.num_classes))
    images = class_grid(model, classes, n, cfg.temperature, generator, cfg.batch_size, progress="sampling")
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
