"""Inference in batches: float32 with autocast off, no gradients, any number of images."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import Tensor

from glow.density import DensityModel


def standard_noise(model: DensityModel, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
    device = model_device(model)
    return [torch.randn((n, *shape), generator=generator).to(device) for shape in model.latent_shapes]


def model_device(model: DensityModel) -> torch.device:
    return model.anchor.device


def model_dtype(model: DensityModel) -> torch.dtype:
    return model.anchor.dtype


@contextlib.contextmanager
def inference_fp32(model: DensityModel) -> Iterator[None]:
    """No gradients and autocast off: sampling and decoding run in the model's own float32 (or 64)."""
    with torch.no_grad(), torch.autocast(device_type=model_device(model).type, enabled=False):
        yield


def chunks(n: int, batch_size: int) -> Iterator[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not allowed: use a positive integer")
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


def on_model(model: DensityModel, t: Tensor | None) -> Tensor | None:
    if t is None:
        return None
    return t.to(model_device(model), model_dtype(model) if t.is_floating_point() else t.dtype)


def encode_latents(model: DensityModel, x: Tensor, cond: Tensor | None = None, batch_size: int = 64) -> list[Tensor]:
    """Every level's latent of images x (finest first), batch_size at a time, on the CPU."""
    parts = []
    with inference_fp32(model):
        for part in chunks(x.shape[0], batch_size):
            zs, _ = model.encode(on_model(model, x[part]), on_model(model, cond[part]) if cond is not None else None)
            parts.append([z.cpu() for z in zs])
    return [torch.cat(level) for level in zip(*parts)]


def decode_latents(model: DensityModel, zs: Sequence[Tensor], cond: Tensor | None = None, batch_size: int = 64) -> Tensor:
    """Images of per-level latents (exact inverse of ``encode_latents``), batch_size at a time, on the CPU."""
    out = []
    with inference_fp32(model):
        for part in chunks(zs[0].shape[0], batch_size):
            out.append(model.decode([on_model(model, z[part]) for z in zs],
                                    on_model(model, cond[part]) if cond is not None else None).cpu())
    return torch.cat(out)
