"""Dequantisation: the noise u in [0, 1)^D that turns pixel bins x into a continuous image y = (x + u) / 2^n - 0.5.

``uniform`` (module.dequantization=uniform, Glow's): u ~ U[0, 1)^D, drawn by glow.quantize.preprocess.
The discrete likelihood is bounded by the density, log P(x) >= E_u[log p(y)] - D log 2^n.

``variational`` (Flow++, Ho et al. 2019): u ~ q(u | x), a small flow conditioned on the image, trained
jointly. The bound is log P(x) >= E_q[log p(y) - log q(u | x)] - D log 2^n, so the reported bits/dim
include -E[log q(u | x)]: an honest upper bound on the discrete NLL, never below it. Here

    eps ~ N(0, I),  v = f(eps; features(x)),  u = Phi(v),
    log q(u | x) = log N(eps) - log|det dv/deps| - sum log phi(v),

with Phi the standard normal CDF: while f is the identity (its couplings start at zero), u is exactly
uniform and log q(u | x) = 0, so the run starts from the uniform bound. Sampling and inpainting never
use q: it only tightens the bound the model is trained and evaluated on.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from glow.flows.base import FlowSequence, logdet_dtype, sum_except_batch
from glow.flows.coupling import Coupling
from glow.quantize import reduce_bits

DEQUANTIZATIONS = ("uniform", "variational")
LOG_2PI = math.log(2 * math.pi)


class VariationalDequantizer(nn.Module):
    """q(u | x): checkerboard affine couplings on N(0, I) noise, conditioned on features of the bin centres."""

    def __init__(self, image_shape: Sequence[int], hidden_channels: int = 16, feature_channels: int = 16,
                 couplings: int = 2):
        super().__init__()
        channels = int(image_shape[0])
        self.features = nn.Sequential(
            nn.Conv2d(channels, feature_channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(feature_channels, feature_channels, 3, padding=1), nn.ReLU())
        self.flow = FlowSequence([
            Coupling(channels, hidden_channels, "affine", mask="checkerboard", parity=k % 2,
                     cond_channels=feature_channels, inner_actnorm=False, affine_scale="tanh")
            for k in range(couplings)])

    def forward(self, images: Tensor, n_bits: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(y: the dequantised images in [-0.5, 0.5), log q(u | x): nats [B])."""
        bins = reduce_bits(images, n_bits).to(self.features[0].weight.dtype)  # float64 in the exactness tests
        centres = (bins + 0.5) / 2 ** n_bits - 0.5
        eps = torch.randn(bins.shape, generator=generator, device=bins.device, dtype=bins.dtype) \
            if generator is not None else torch.randn_like(bins)
        v, logdet = self.flow(eps, self.features(centres))
        v = v.to(logdet_dtype(eps))
        u = torch.special.ndtr(v).clamp(max=1 - 2 ** -24)  # [0, 1): the bin's upper edge is the next bin's
        log_normal = -0.5 * (LOG_2PI + v * v)              # log phi(v)
        log_q = sum_except_batch(-0.5 * (LOG_2PI + eps * eps)) - logdet - sum_except_batch(log_normal)
        return (bins + u) / 2 ** n_bits - 0.5, log_q
