"""The one place where pixels become model inputs and back, and where bits/dim is defined.

Model space is y in [-0.5, 0.5): an image x in {0..2^n_bits - 1} (after dropping the low
8 - n_bits bits) plus uniform noise u in [0, 1), divided by the number of bins:

    y = (x + u) / 2^n_bits - 0.5

The continuous density p(y) lower-bounds the discrete probability of x, so

    bits/dim = (-log p(y) + D * log(2^n_bits)) / (D * ln 2)

is an upper bound on the negative log2-likelihood of x per dimension (Theis et al. 2016).
Training, evaluation and sampling all go through these functions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_n_bits(n_bits: int, key: str = "n_bits") -> int:
    """The one bit-depth check (glow.config.validate_n_bits calls it with key="module.n_bits")."""
    if not isinstance(n_bits, int) or isinstance(n_bits, bool) or not 1 <= n_bits <= 8:
        raise ValueError(f"{key}={n_bits!r} is not allowed: use an integer in 1..8")
    return n_bits


def reduce_bits(x_uint8: Tensor, n_bits: int) -> Tensor:
    """uint8 pixels -> integer bins 0..2^n_bits-1 (as float32)."""
    check_n_bits(n_bits)
    if x_uint8.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {x_uint8.dtype}")
    x = x_uint8.to(torch.float32)
    if n_bits < 8:
        x = torch.floor(x / 2 ** (8 - n_bits))
    return x


def preprocess(x_uint8: Tensor, n_bits: int = 8, dequantize: bool = True,
               generator: torch.Generator | None = None) -> Tensor:
    """uint8 image -> y in [-0.5, 0.5), uniformly dequantised unless ``dequantize=False``.

    Without dequantisation the bin's centre is used (useful for deterministic displays).
    """
    bins = 2 ** n_bits
    x = reduce_bits(x_uint8, n_bits)
    if dequantize:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) \
            if generator is not None else torch.rand_like(x)
    else:
        noise = torch.full_like(x, 0.5)
    return (x + noise) / bins - 0.5


def to_uint8(y: Tensor, n_bits: int = 8) -> Tensor:
    """Model space -> uint8 pixels for display: the bin y falls in, scaled back to 0..255."""
    check_n_bits(n_bits)
    bins = 2 ** n_bits
    x = torch.floor((y.detach().float() + 0.5) * bins).clamp_(0, bins - 1)
    return (x * 2 ** (8 - n_bits)).to(torch.uint8)


def to_unit_range(y: Tensor, n_bits: int = 8) -> Tensor:
    """Model space -> float in [0, 1], what torchvision's make_grid/save_image expect."""
    return to_uint8(y, n_bits).float() / 255.0


def bits_per_dim(log_prob: Tensor, num_dims: int, n_bits: int = 8) -> Tensor:
    """Per-sample bits/dim from the natural-log density of the dequantised image y."""
    check_n_bits(n_bits)
    log_bins = num_dims * n_bits * math.log(2.0)  # D * log(2^n_bits)
    return (-log_prob.double() + log_bins) / (num_dims * math.log(2.0))
