"""What users do with a trained model, as pure functions on a Glow (shared by sample.py and callbacks).

All images are in model space ([-0.5, 0.5)) unless named ``*_uint8``; ``save_grid`` turns them into
PNGs through glow.quantize. Everything here runs in float32, whatever precision training used.

The tasks of sample.py (each returns a grid's images in row-major order, on the CPU; functions
named ``*_latents`` work on lists of per-level latents, finest first, as ``Glow.encode`` gives):

    sample(model, n, temperature)                       n images
    temperature_sweep(model, temperatures, n)           one row per temperature, same noise in every row
    class_grid(model, classes, n, temperature)          one row per class, same noise in every row
    interpolate(model, x_a, x_b, steps, mode)           one row per pair: encode, interpolate every level, decode
    reconstruction_pairs(model, x)                      original, reconstruction, original, ...
    attribute_direction(model, x, has_attribute)        mean latent with minus mean latent without
    manipulate(model, x, direction, scales)             one row per image: decode(z + s * direction)

All of them draw ``batch_size`` images at a time (so n is not bounded by memory), with autocast off
and no gradients. Random draws come from an optional CPU ``generator``, so a seed gives the same
images on CPU and GPU (for a given batch_size). Non-finite images are returned as they are: callers
report them (``blank_nonfinite``) before writing a grid.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor
from torchvision.utils import save_image

from glow.model import Glow
from glow.quantize import preprocess, to_unit_range


class NonFiniteSampleError(RuntimeError):
    pass


# -- loading ---------------------------------------------------------------------------------
def load_checkpoint(ckpt_path: str | Path, map_location: str = "cpu") -> dict:
    """The checkpoint dict (weights_only=True), or a one-line glow.checkpoints.CheckpointError."""
    from glow.checkpoints import read_checkpoint

    return read_checkpoint(ckpt_path, map_location)


def load(ckpt_path: str | Path, use_ema: bool = True, map_location: str = "cpu") -> Glow:
    """Rebuild the Glow of a train.py checkpoint, with its EMA weights when it has them."""
    from glow.checkpoints import CheckpointError

    checkpoint = load_checkpoint(ckpt_path, map_location)
    try:
        return _rebuild(checkpoint, use_ema)
    except (TypeError, ValueError, RuntimeError, KeyError) as err:  # tampered or foreign contents
        raise CheckpointError(f"ckpt_path={str(ckpt_path)!r} does not rebuild a model: "
                              f"{type(err).__name__}: {str(err).strip().splitlines()[0][:160]}") from None


def _rebuild(checkpoint: dict, use_ema: bool) -> Glow:
    hparams = checkpoint["hyper_parameters"]
    model = Glow(**hparams["model_config"])
    state = checkpoint["state_dict"]
    prefix = "ema.module." if use_ema and any(k.startswith("ema.module.") for k in state) else "model."
    # torch.compile wraps modules as `_orig_mod`; strip it so compiled and plain runs load alike
    weights = {k[len(prefix):].replace("_orig_mod.", ""): v for k, v in state.items() if k.startswith(prefix)}
    if prefix == "ema.module.":
        # the average holds parameters only; the buffers (ActNorm flags, permutations) are the live ones
        live = {k[len("model."):].replace("_orig_mod.", ""): v for k, v in state.items() if k.startswith("model.")}
        weights = {**{k: v for k, v in live.items() if k not in weights}, **weights}
    model.load_state_dict(weights)
    model.n_bits = int(hparams.get("n_bits", 8))
    return model.eval()


# -- grids -----------------------------------------------------------------------------------
def standard_noise(model: Glow, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
    device = model.top_prior.anchor.device
    return [torch.randn((n, *shape), generator=generator).to(device) for shape in model.latent_shapes]


@torch.no_grad()
def temperature_grid(model: Glow, temperatures: Sequence[float], n: int, generator: torch.Generator | None = None,
                     labels: Tensor | None = None, allow_nonfinite: bool = False) -> Tensor:
    """One row of n samples per temperature, with the same noise in every row: [len(T) * n, C, H, W]."""
    if labels is not None:
        n = len(labels)
        labels = labels.to(model.top_prior.anchor.device)
    noise = standard_noise(model, n, generator)
    rows = [model.sample(n, temperature=t, cond=labels, noise=noise) for t in temperatures]
    grid = torch.cat(rows)
    return grid if allow_nonfinite else check_finite(grid, "samples")


@torch.no_grad()
def reconstruct(model: Glow, x: Tensor, cond: Tensor | None = None) -> Tensor:
    """decode(encode(x)): exact, no latent resampled."""
    zs, _ = model.encode(x, cond)
    return model.decode(zs, cond)


@torch.no_grad()
def reconstruction_grid(model: Glow, images_uint8: Tensor, cond: Tensor | None, n_bits: int) -> Tensor:
    """Originals (bin centres) on the first row, their reconstructions on the second."""
    x = preprocess(images_uint8, n_bits, dequantize=False)
    return torch.cat([x, reconstruct(model, x, cond)])


def check_finite(x: Tensor, what: str) -> Tensor:
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x.flatten(1))).any(1).sum().item()
        raise NonFiniteSampleError(f"{bad} of {x.shape[0]} {what} are non-finite (NaN or inf)")
    return x


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
    check_finite(grid, "images")
    save_image(to_unit_range(grid.cpu(), n_bits), path, nrow=nrow or max(1, int(grid.shape[0] ** 0.5)), padding=1)
    return path


# -- sample.py's tasks -----------------------------------------------------------------------
INTERPOLATION_MODES = ("linear", "slerp")


def model_device(model: Glow) -> torch.device:
    return model.top_prior.anchor.device


def _model_dtype(model: Glow) -> torch.dtype:
    return model.top_prior.anchor.dtype


@contextlib.contextmanager
def inference_fp32(model: Glow) -> Iterator[None]:
    """No gradients and autocast off: sampling and decoding run in the model's own float32 (or 64)."""
    with torch.no_grad(), torch.autocast(device_type=model_device(model).type, enabled=False):
        yield


def _chunks(n: int, batch_size: int) -> Iterator[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not allowed: use a positive integer")
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def _on(model: Glow, t: Tensor | None) -> Tensor | None:
    if t is None:
        return None
    return t.to(model_device(model), _model_dtype(model) if t.is_floating_point() else t.dtype)


def _check_sampling_labels(model: Glow, labels: Tensor | None, n: int) -> None:
    if model.conditional == "image":
        raise ValueError("this Glow is an inpainting model (conditional=image): it samples given a masked "
                         "image (inpainting), not from nothing")
    if model.conditional == "class":
        if labels is None or len(labels) != n:
            raise ValueError(f"this Glow is class-conditional: pass {n} labels")
        if labels.min() < 0 or labels.max() >= model.num_classes:
            raise ValueError(f"labels must be in 0..{model.num_classes - 1}, got {labels.tolist()}")
    elif labels is not None:
        raise ValueError("this Glow is unconditional: pass no labels")


def _shared_noise_rows(model: Glow, rows: Sequence[tuple[float, Tensor | None]], n: int,
                       generator: torch.Generator | None, batch_size: int) -> Tensor:
    """One row of n samples per (temperature, labels [n] or None), the same noise in every row."""
    out = [[] for _ in rows]
    with inference_fp32(model):
        for cols in _chunks(n, batch_size):
            b = cols.stop - cols.start
            noise = [z.to(_model_dtype(model)) for z in standard_noise(model, b, generator)]
            for r, (temperature, labels) in enumerate(rows):
                cond = _on(model, labels[cols]) if labels is not None else None
                out[r].append(model.sample(b, temperature=float(temperature), cond=cond, noise=noise).cpu())
    return torch.cat([torch.cat(row) for row in out])


def sample(model: Glow, n: int, temperature: float = 0.7, generator: torch.Generator | None = None,
           labels: Tensor | None = None, batch_size: int = 64) -> Tensor:
    """n samples at ``temperature`` (every prior's std times T); ``labels`` [n] for a class-conditional model."""
    _check_sampling_labels(model, labels, n)
    return _shared_noise_rows(model, [(temperature, labels)], n, generator, batch_size)


def temperature_sweep(model: Glow, temperatures: Sequence[float], n: int, generator: torch.Generator | None = None,
                      labels: Tensor | None = None, batch_size: int = 64) -> Tensor:
    """One row of n samples per temperature, the same noise in every row: [len(temperatures) * n, C, H, W].

    A class-conditional model needs ``labels`` [n], one per column.
    """
    _check_sampling_labels(model, labels, n)
    return _shared_noise_rows(model, [(t, labels) for t in temperatures], n, generator, batch_size)


def class_grid(model: Glow, classes: Sequence[int], n: int, temperature: float = 0.7,
               generator: torch.Generator | None = None, batch_size: int = 64) -> Tensor:
    """One row of n samples per class, the same noise in every row (a column keeps its "style"):
    [len(classes) * n, C, H, W]."""
    if model.conditional != "class":
        raise ValueError(f"class samples need a class-conditional Glow (conditional=class), "
                         f"this one has conditional={model.conditional!r}")
    rows = [(temperature, torch.full((n,), int(c), dtype=torch.long)) for c in classes]
    for _, labels in rows:
        _check_sampling_labels(model, labels, n)
    return _shared_noise_rows(model, rows, n, generator, batch_size)


def encode_latents(model: Glow, x: Tensor, cond: Tensor | None = None, batch_size: int = 64) -> list[Tensor]:
    """Every level's latent of images x (finest first), batch_size at a time, on the CPU."""
    parts = []
    with inference_fp32(model):
        for part in _chunks(x.shape[0], batch_size):
            zs, _ = model.encode(_on(model, x[part]), _on(model, cond[part]) if cond is not None else None)
            parts.append([z.cpu() for z in zs])
    return [torch.cat(level) for level in zip(*parts)]


def decode_latents(model: Glow, zs: Sequence[Tensor], cond: Tensor | None = None, batch_size: int = 64) -> Tensor:
    """Images of per-level latents (exact inverse of ``encode_latents``), batch_size at a time, on the CPU."""
    out = []
    with inference_fp32(model):
        for part in _chunks(zs[0].shape[0], batch_size):
            out.append(model.decode([_on(model, z[part]) for z in zs],
                                    _on(model, cond[part]) if cond is not None else None).cpu())
    return torch.cat(out)


def interpolation_weights(steps: int) -> Tensor:
    """``steps`` weights from 0 to 1 inclusive (float64, so that the end points are exactly 0 and 1)."""
    if steps < 2:
        raise ValueError(f"steps={steps!r} is not allowed: use an integer >= 2 (the two end points included)")
    return torch.linspace(0.0, 1.0, steps, dtype=torch.float64)


def _slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation per sample of flattened a, b [P, D]; linear where they are (anti)parallel."""
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum(1) / (a64.norm(dim=1) * b64.norm(dim=1)).clamp_min(1e-30)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, torch.full_like(sin, 1.0 - t), torch.sin((1.0 - t) * omega) / safe)
    wb = torch.where(parallel, torch.full_like(sin, t), torch.sin(t * omega) / safe)
    return (wa[:, None] * a64 + wb[:, None] * b64).to(a.dtype)


def interpolate_latents(zs_a: Sequence[Tensor], zs_b: Sequence[Tensor], steps: int = 8,
                        mode: str = "linear") -> list[Tensor]:
    """Per-level interpolation from zs_a to zs_b (each [P, ...]), ``steps`` points per pair.

    Returns latents of P * steps images, pair-major (row i holds pair i). ``slerp`` interpolates each
    level's latent of each pair along the great circle (norms interpolated linearly in angle). The
    end points ARE zs_a and zs_b, bit for bit, so decoding them reproduces the inputs exactly.
    """
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"mode={mode!r} is not allowed: use one of {', '.join(INTERPOLATION_MODES)}")
    weights = interpolation_weights(steps)
    levels = []
    for a, b in zip(zs_a, zs_b):
        flat_a, flat_b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        points = []
        for i, t in enumerate(weights.tolist()):
            if i == 0:
                point = flat_a
            elif i == steps - 1:
                point = flat_b
            elif mode == "linear":
                point = ((1.0 - t) * flat_a.double() + t * flat_b.double()).to(a.dtype)
            else:
                point = _slerp(flat_a, flat_b, t)
            points.append(point.reshape(a.shape))
        levels.append(torch.stack(points, dim=1).reshape(a.shape[0] * steps, *a.shape[1:]))
    return levels


def interpolate(model: Glow, x_a: Tensor, x_b: Tensor, steps: int = 8, mode: str = "linear",
                cond: Tensor | None = None, batch_size: int = 64) -> Tensor:
    """Interpolations between image pairs (x_a[i], x_b[i]): [P * steps, C, H, W], one row per pair.

    Every level's latent is encoded, interpolated (``linear`` or ``slerp``) and decoded, so the first
    and last image of each row reproduce x_a and x_b (up to float error). ``cond`` [P, ...], if the
    model needs one, serves both ends and every step of its row.
    """
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    zs = interpolate_latents(encode_latents(model, x_a, cond, batch_size),
                             encode_latents(model, x_b, cond, batch_size), steps, mode)
    cond_rows = cond.repeat_interleave(steps, dim=0) if cond is not None else None
    return decode_latents(model, zs, cond_rows, batch_size)


def reconstruction_pairs(model: Glow, x: Tensor, cond: Tensor | None = None, batch_size: int = 64) -> Tensor:
    """Originals and their decode(encode(x)) side by side: [x_0, rec_0, x_1, rec_1, ...] ([2n, C, H, W])."""
    rec = decode_latents(model, encode_latents(model, x, cond, batch_size), cond, batch_size)
    return torch.stack([x.cpu().to(rec.dtype), rec], dim=1).reshape(2 * x.shape[0], *x.shape[1:])


def attribute_direction(model: Glow, x: Tensor, has_attribute: Tensor, cond: Tensor | None = None,
                        batch_size: int = 64) -> list[Tensor]:
    """Per-level latent direction of an attribute: mean latent of images with it minus the mean of
    those without (Glow, section 5). ``has_attribute`` is a bool [N]; both groups must be non-empty."""
    has_attribute = has_attribute.bool().cpu()
    if has_attribute.all() or not has_attribute.any():
        raise ValueError(f"an attribute direction needs images with and without the attribute, got "
                         f"{int(has_attribute.sum())} with and {int((~has_attribute).sum())} without")
    zs = encode_latents(model, x, cond, batch_size)
    return [z[has_attribute].double().mean(0).to(z.dtype) - z[~has_attribute].double().mean(0).to(z.dtype)
            for z in zs]


def manipulate(model: Glow, x: Tensor, direction: Sequence[Tensor],
               scales: Sequence[float] = (-1.0, -0.5, 0.0, 0.5, 1.0), cond: Tensor | None = None,
               batch_size: int = 64) -> Tensor:
    """decode(encode(x) + s * direction) for each scale s: [N * len(scales), C, H, W], one row per image.

    Scale 0 is the exact reconstruction.
    """
    zs = encode_latents(model, x, cond, batch_size)
    rows = [torch.stack([z + float(s) * d.to(z.dtype) for s in scales], dim=1).reshape(-1, *z.shape[1:])
            for z, d in zip(zs, direction)]
    return decode_latents(model, rows, cond.repeat_interleave(len(scales), dim=0) if cond is not None else None,
                          batch_size)


def grid_shape(num_images: int, nrow: int) -> tuple[int, int]:
    """(rows, columns) of torchvision's make_grid for ``num_images`` laid ``nrow`` to a row."""
    cols = min(nrow, num_images)
    return math.ceil(num_images / cols), cols


# -- inpainting ------------------------------------------------------------------------------
# inpaint(model, x, mask, n=8, method="auto"|"cglow"|"mcmc"|"map", ...) -> InpaintResult; see glow.inpaint.
from glow.inpaint import InpaintResult, completions_uint8, inpaint  # noqa: E402,F401
