"""What each tab does, as plain functions of a DemoSession (no Gradio here, so tests call them directly).

Every action goes through the glow.sampling functions that sample.py uses (sample, interpolate,
reconstruction_pairs, inpaint, completions_uint8); nothing here samples, encodes or decodes on its
own. Bad input raises DemoInputError with one line, which the page shows as it is.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from glow.conditioning import encoding_condition, grid_labels, label_problem
from glow.demo.images import display_factor, enlarge, grid, to_display
from glow.demo.session import DemoInputError, DemoSession
from glow.quantize import preprocess, to_uint8
from glow.sampling import blank_nonfinite, completions_uint8, inpaint, interpolate, reconstruction_pairs, sample
from glow.config import MAX_SEED
from glow.errors import ConfigError
from glow.sampling.batched import model_device
from glow.sampling.diagnostics import describe
from glow.sampling.tasks import check_fit

Progress = Callable[[float, str], None]
MAX_IMAGES = 256          # per click: bounds the wait of everyone queued behind
MAX_POINTS = 32


def _quiet(fraction: float, desc: str) -> None:
    pass


def _check_problem(session: DemoSession, task: str, method: str | None = None, label=None) -> None:
    """The model's capabilities allow the tab's task (glow.sampling.tasks), or one line on the page."""
    try:
        check_fit(session.model, task, method)
    except ConfigError as err:
        raise DemoInputError(str(err)) from None
    problem = label_problem(session.model.kind, label)
    if problem is not None:
        raise DemoInputError(f"class={label!r}: {problem}")


def _count(value, name: str, low: int, high: int) -> int:
    if value is None or float(value) != int(float(value)) or not low <= int(float(value)) <= high:
        raise DemoInputError(f"{name}={value!r} is not allowed: use an integer in {low}..{high}")
    return int(float(value))


def _generator(seed) -> torch.Generator:
    if seed is None or not math.isfinite(float(seed)) or float(seed) != int(float(seed)) \
            or not 0 <= int(float(seed)) <= MAX_SEED:
        raise DemoInputError(f"seed={seed!r} is not allowed: use an integer in 0..{MAX_SEED}")
    return torch.Generator().manual_seed(int(float(seed)))


def _temperature(value) -> float:
    if value is None or not math.isfinite(float(value)) or float(value) < 0:
        raise DemoInputError(f"temperature={value!r} is not allowed: use a number >= 0")
    return float(value)


def sample_images(session: DemoSession, temperature, n, seed, label=None, progress: Progress = _quiet
                  ) -> tuple[np.ndarray, str]:
    """n samples at ``temperature`` as one grid (glow.sampling.sample), and a one-line summary."""
    model = session.model
    n = _count(n, "n", 1, MAX_IMAGES)
    temperature = _temperature(temperature)
    if label is not None and model.kind.labels:
        label = _count(label, "class", 0, model.kind.num_classes - 1)
    else:
        label = None
    _check_problem(session, "sample", label=label)
    progress(0.0, f"sampling {n} images")
    images = sample(model, n, temperature, _generator(seed), grid_labels(model, n, label), session.batch_size)
    picture, bad = grid(images, model.n_bits, math.ceil(math.sqrt(n)))
    which = f", class {label}" if label is not None else (", classes 0, 1, ... in turn" if model.kind.labels else "")
    return picture, f"{n} samples at T={temperature:g}{which}" + (f"; {bad} non-finite, shown grey" if bad else "")


def _model_space(session: DemoSession, images_uint8: Tensor) -> Tensor:
    return preprocess(images_uint8, session.model.n_bits, dequantize=False)


def interpolation(session: DemoSession, image_a: Tensor, image_b: Tensor, points, mode: str,
                  labels: Tensor | None = None, progress: Progress = _quiet) -> tuple[np.ndarray, str]:
    """A row from image_a to image_b (uint8 [C, H, W]) through every level's latent (glow.sampling.interpolate)."""
    points = _count(points, "steps", 2, MAX_POINTS)
    if mode not in ("linear", "slerp"):
        raise DemoInputError(f"mode={mode!r} is not allowed: use linear or slerp")
    _check_problem(session, "interpolate")
    model = session.model
    x = _model_space(session, torch.stack([image_a, image_b]))
    cond = encoding_condition(model, x, labels)
    progress(0.0, "encoding, interpolating, decoding")
    row = interpolate(model, x[:1], x[1:], points, mode, cond[:1] if cond is not None else None, session.batch_size)
    error = max((row[0] - x[0]).abs().max().item(), (row[-1] - x[1]).abs().max().item())
    picture, bad = grid(row, model.n_bits, points)
    return picture, (f"{mode} interpolation in {points} steps; the end points reproduce the inputs to "
                     f"{error:.1e}" + (f"; {bad} non-finite, shown grey" if bad else ""))


def reconstruction(session: DemoSession, image: Tensor, label: Tensor | None = None
                   ) -> tuple[np.ndarray, np.ndarray, str]:
    """decode(encode(x)) of an uint8 image [C, H, W] (glow.sampling.reconstruction_pairs) and its max error."""
    _check_problem(session, "reconstruct")
    model = session.model
    x = _model_space(session, image[None])
    pair = reconstruction_pairs(model, x, encoding_condition(model, x, label), session.batch_size)
    error = (pair[1] - pair[0]).abs().max().item()
    rebuilt_model_space, bad = blank_nonfinite(pair[1:])
    rebuilt = to_uint8(rebuilt_model_space, model.n_bits)[0]
    changed = int((rebuilt != image).any(0).sum())
    return to_display(image), to_display(rebuilt), (
        f"max error {error:.2e} (model space, pixels in [-0.5, 0.5]); {changed} of {image.shape[1] * image.shape[2]} "
        f"pixels differ after rounding back to 8 bits" + ("; the reconstruction is non-finite" if bad else ""))


def inpainting(session: DemoSession, image: Tensor, mask: Tensor, n, temperature, steps, seed,
               progress: Progress = _quiet) -> tuple[list[np.ndarray], np.ndarray, str]:
    """n completions of an uint8 image [C, H, W] where mask [1, H, W] == 1 (glow.sampling.inpaint,
    method auto: c-Glow for an inpainting checkpoint, else the unconditional sampler), observed pixels
    copied bit-exactly (glow.sampling.completions_uint8). Returns the completions, the masked input
    (the hole grey) and a summary."""
    model = session.model
    n = _count(n, "n", 1, 64)
    steps = _count(steps, "steps", 1, 5000)
    temperature = None if temperature is None else _temperature(temperature)
    _check_problem(session, "inpaint", "auto")
    if not mask.any():
        raise DemoInputError("the mask is empty: paint the missing region over the image with the brush first")
    device = model_device(model)
    x = _model_space(session, image[None]).to(device)
    hole = mask[None].to(device)
    progress(0.0, "inpainting")
    generator = _generator(seed)
    # c-Glow draws from torch's global generator: seed a private copy of it, so a seed gives the same
    # completions on either route without disturbing anyone else's random stream
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(float(seed)))
        result = inpaint(model, x, hole, n=n, method="auto", temperature=temperature, steps=steps,
                         generator=generator, progress=lambda step: progress((step + 1) / steps, "sampling"))
    on_cpu = dataclasses.replace(result, completions=result.completions.cpu())  # the input lives on the CPU
    filled = completions_uint8(on_cpu, image[None], mask[None].cpu(), model.n_bits)[0]
    masked = torch.where(mask.bool().expand_as(image), torch.full_like(image, 128), image)
    rate = describe(result.acceptance_rate, result.stats)
    rate = f"; sampler: {rate}" if rate else ""
    holes = int(mask.sum())
    return [to_display(c) for c in filled], to_display(masked), (
        f"{n} completions ({result.method}{rate}) of {holes} missing pixels; the other "
        f"{image.shape[1] * image.shape[2] - holes} are the input's, unchanged")


def editor_background(image: Tensor) -> np.ndarray:
    """The image enlarged for painting on (each model pixel a block of the brush's scale)."""
    return to_display(enlarge(image, display_factor(image.shape[-1])))
