"""Interpolation between images: encode every level, interpolate (linear or slerp), decode."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from glow.density import DensityModel
from glow.sampling.batched import decode_latents, encode_latents

INTERPOLATION_MODES = ("linear", "slerp")


def interpolation_weights(points: int) -> Tensor:
    """``points`` weights from 0 to 1 inclusive (float64, so that the end points are exactly 0 and 1)."""
    if points < 2:
        raise ValueError(f"points={points!r} is not allowed: use an integer >= 2 (the two end points included)")
    return torch.linspace(0.0, 1.0, points, dtype=torch.float64)


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


def interpolate_latents(zs_a: Sequence[Tensor], zs_b: Sequence[Tensor], points: int = 8,
                        mode: str = "linear") -> list[Tensor]:
    """Per-level interpolation from zs_a to zs_b (each [P, ...]), ``points`` images per pair.

    Returns latents of P * points images, pair-major (row i holds pair i). ``slerp`` interpolates each
    level's latent of each pair along the great circle (norms interpolated linearly in angle). The
    end points ARE zs_a and zs_b, bit for bit, so decoding them reproduces the inputs exactly.
    """
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"mode={mode!r} is not allowed: use one of {', '.join(INTERPOLATION_MODES)}")
    weights = interpolation_weights(points)
    levels = []
    for a, b in zip(zs_a, zs_b):
        flat_a, flat_b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        row = []
        for i, t in enumerate(weights.tolist()):
            if i == 0:
                point = flat_a
            elif i == points - 1:
                point = flat_b
            elif mode == "linear":
                point = ((1.0 - t) * flat_a.double() + t * flat_b.double()).to(a.dtype)
            else:
                point = _slerp(flat_a, flat_b, t)
            row.append(point.reshape(a.shape))
        levels.append(torch.stack(row, dim=1).reshape(a.shape[0] * points, *a.shape[1:]))
    return levels


def interpolate(model: DensityModel, x_a: Tensor, x_b: Tensor, points: int = 8, mode: str = "linear",
                cond: Tensor | None = None, batch_size: int = 64) -> Tensor:
    """Interpolations between image pairs (x_a[i], x_b[i]): [P * points, C, H, W], one row per pair.

    Every level's latent is encoded, interpolated (``linear`` or ``slerp``) and decoded, so the first
    and last image of each row reproduce x_a and x_b (up to float error). ``cond`` [P, ...], if the
    model needs one, serves both ends and every step of its row.
    """
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    zs = interpolate_latents(encode_latents(model, x_a, cond, batch_size),
                             encode_latents(model, x_b, cond, batch_size), points, mode)
    cond_rows = cond.repeat_interleave(points, dim=0) if cond is not None else None
    return decode_latents(model, zs, cond_rows, batch_size)
