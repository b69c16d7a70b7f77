"""Attribute manipulation (DensityModel, section 5): a latent direction from labelled images, then
decode(encode(x) + s * direction)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from glow.density import DensityModel
from glow.sampling.batched import decode_latents, encode_latents


def attribute_direction(model: DensityModel, x: Tensor, has_attribute: Tensor, cond: Tensor | None = None,
                        batch_size: int = 64) -> list[Tensor]:
    """Per-level latent direction of an attribute: mean latent of images with it minus the mean of
    those without (DensityModel, section 5). ``has_attribute`` is a bool [N]; both groups must be non-empty."""
    has_attribute = has_attribute.bool().cpu()
    if has_attribute.all() or not has_attribute.any():
        raise ValueError(f"an attribute direction needs images with and without the attribute, got "
                         f"{int(has_attribute.sum())} with and {int((~has_attribute).sum())} without")
    zs = encode_latents(model, x, cond, batch_size)
    return [z[has_attribute].double().mean(0).to(z.dtype) - z[~has_attribute].double().mean(0).to(z.dtype)
            for z in zs]


def manipulate(model: DensityModel, x: Tensor, direction: Sequence[Tensor],
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
