"""Grids of images: samples, temperature rows, class rows, reconstructions, and writing them as PNG.

``temperature_sweep`` is the one temperature-grid API: sample.py and the training callback both use it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torchvision.utils import save_image
from tqdm.auto import tqdm

from glow.conditioning import check_sampling_labels, require_class_conditional
from glow.density import DensityModel
from glow.quantize import preprocess, to_unit_range
from glow.sampling.batched import (chunks, decode_latents, encode_latents, inference_fp32, model_dtype, on_model,
                                   standard_noise)


def _shared_noise_rows(model: DensityModel, rows: Sequence[tuple[float, Tensor | None]], n: int,
                       generator: torch.Generator | None, batch_size: int, progress: str | None = None) -> Tensor:
    """One row of n samples per (temperature, labels [n] or None), the same noise in every row; with
    ``progress`` (its label) a bar of the batches when there is more than one (MAF: 784 passes each)."""
    out = [[] for _ in rows]
    batches = -(-n // max(1, batch_size))
    with inference_fp32(model), tqdm(total=batches * len(rows), desc=progress, unit="batch",
                                     disable=progress is None or batches * len(rows) < 2) as bar:
        for cols in chunks(n, batch_size):
            b = cols.stop - cols.start
            noise = [z.to(model_dtype(model)) for z in standard_noise(model, b, generator)]
            for r, (temperature, labels) in enumerate(rows):
                cond = on_model(model, labels[cols]) if labels is not None else None
                out[r].append(model.sample(b, temperature=float(temperature), cond=cond, noise=noise).cpu())
                bar.update(1)
    return torch.cat([torch.cat(row) for row in out])


def sample(model: DensityModel, n: int, temperature: float = 0.7, generator: torch.Generator | None = None,
           labels: Tensor | None = None, batch_size: int = 64, progress: str | None = None) -> Tensor:
    """n samples at ``temperature`` (every prior's std times T); ``labels`` [n] for a class-conditional model;
    ``progress``: a bar's label (sample.py), None for none (training, the page)."""
    check_sampling_labels(model, labels, n)
    return _shared_noise_rows(model, [(temperature, labels)], n, generator, batch_size, progress)


def temperature_sweep(model: DensityModel, temperatures: Sequence[float], n: int, generator: torch.Generator | None = None,
                      labels: Tensor | None = None, batch_size: int = 64, progress: str | None = None) -> Tensor:
    """One row of n samples per temperature, the same noise in every row: [len(temperatures) * n, C, H, W].

    A class-conditional model needs ``labels`` [n], one per column.
    """
    check_sampling_labels(model, labels, n)
    return _shared_noise_rows(model, [(t, labels) for t in temperatures], n, generator, batch_size, progress)


def class_grid(model: DensityModel, classes: Sequence[int], n: int, temperature: float = 0.7,
               generator: torch.Generator | None = None, batch_size: int = 64, progress: str | None = None) -> Tensor:
    """One row of n samples per class, the same noise in every row (a column keeps its "style"):
    [len(classes) * n, C, H, W]."""
    require_class_conditional(model)
    rows = [(temperature, torch.full((n,), int(c), dtype=torch.long)) for c in classes]
    for _, labels in rows:
        check_sampling_labels(model, labels, n)
    return _shared_noise_rows(model, rows, n, generator, batch_size, progress)


@torch.no_grad()
def reconstruct(model: DensityModel, x: Tensor, cond: Tensor | None = None) -> Tensor:
    """decode(encode(x)): exact, no latent resampled."""
    zs, _ = model.encode(x, cond)
    return model.decode(zs, cond)


@torch.no_grad()
def reconstruction_grid(model: DensityModel, images_uint8: Tensor, cond: Tensor | None, n_bits: int) -> Tensor:
    """Originals (bin centres) on the first row, their reconstructions on the second."""
    x = preprocess(images_uint8, n_bits, dequantize=False)
    return torch.cat([x, reconstruct(model, x, cond)])


def reconstruction_pairs(model: DensityModel, x: Tensor, cond: Tensor | None = None, batch_size: int = 64) -> Tensor:
    """Originals and their decode(encode(x)) side by side: [x_0, rec_0, x_1, rec_1, ...] ([2n, C, H, W])."""
    rec = decode_latents(model, encode_latents(model, x, cond, batch_size), cond, batch_size)
    return torch.stack([x.cpu().to(rec.dtype), rec], dim=1).reshape(2 * x.shape[0], *x.shape[1:])


def blank_nonfinite(images: Tensor) -> tuple[Tensor, int]:
    """Replace every image holding a NaN or inf by mid-grey; return the images and how many there were."""
    bad = ~torch.isfinite(images.flatten(1)).all(1)
    if bad.any():
        images = images.clone()
        images[bad] = 0.0
    return images, int(bad.sum())


def save_grid(grid: Tensor, path: str | Path, n_bits: int = 8, nrow: int | None = None) -> Path:
    """Write a model-space grid as a PNG via torchvision; rows of ``nrow`` (default: square-ish)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not torch.isfinite(grid).all():  # callers blank non-finite images first (blank_nonfinite)
        raise ValueError(f"{int((~torch.isfinite(grid.flatten(1))).any(1).sum())} of {grid.shape[0]} images "
                         f"are non-finite (NaN or inf): blank them with blank_nonfinite first")
    save_image(to_unit_range(grid.cpu(), n_bits), path, nrow=nrow or max(1, int(grid.shape[0] ** 0.5)), padding=1)
    return path


def grid_shape(num_images: int, nrow: int) -> tuple[int, int]:
    """(rows, columns) of torchvision's make_grid for ``num_images`` laid ``nrow`` to a row."""
    cols = min(nrow, num_images)
    return math.ceil(num_images / cols), cols
