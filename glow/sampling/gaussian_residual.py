"""The Gaussian-residual baseline of a c-Glow's hole likelihood: the c-Glow's own prediction mu(c)
(glow.hole_predictor), plus a Gaussian per missing pixel and context fitted on training holes.

    x_i | c  ~  N(mu_i(c) + b_{i,k}, s_{i,k}^2)  truncated to the data box [-0.5, 0.5]

for hole pixel i, where k = k(mu_i(c)) is the bin of the predicted value among ``bins`` quantile bins of
mu over the training holes (the context: near a predicted black pixel the residual is narrow, near
grey it is wide); ``bins=1`` is a per-pixel Gaussian. b and s are the mean and standard deviation of the
residual x - mu over the training images (dequantised as in training), per pixel and bin; a cell with
fewer than ``min_count`` residuals takes its pixel's figures. Truncating to the data box (renormalising
by Phi((0.5 - m)/s) - Phi((-0.5 - m)/s)) only makes the baseline stronger: an untruncated Gaussian
wastes mass outside the box.

Scored like the c-Glow (scripts/evaluate_inpainting.py): on test images dequantised with the same
uniform noise as in training, bits per missing dim -log2 q(x_hole | c) / n_missing + n_bits, an upper
bound of the discrete hole's bits for the same reason (the dequantised density bounds the discrete one);
the observed pixels cost the baseline nothing, since it is handed them exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class GaussianResidual:
    edges: Tensor   # [bins - 1] inner bin edges of mu
    offset: Tensor  # [bins, C, H, W] b
    scale: Tensor   # [bins, C, H, W] s
    truncate: bool = True

    def bins_of(self, mu: Tensor) -> Tensor:
        return torch.bucketize(mu.contiguous(), self.edges)

    def params(self, mu: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) [N, C, H, W] of every pixel given the predictions mu [N, C, H, W]."""
        k = self.bins_of(mu)
        offset = torch.gather(self.offset.unsqueeze(0).expand(mu.shape[0], *self.offset.shape), 1,
                              k.unsqueeze(1)).squeeze(1)
        scale = torch.gather(self.scale.unsqueeze(0).expand(mu.shape[0], *self.scale.shape), 1,
                             k.unsqueeze(1)).squeeze(1)
        return mu + offset, scale

    def log_density(self, x: Tensor, mu: Tensor) -> Tensor:
        """Per-pixel natural-log density [N, C, H, W] of x given mu."""
        mean, std = self.params(mu)
        z = (x - mean) / std
        log_q = -0.5 * z ** 2 - torch.log(std) - LOG_SQRT_2PI
        if self.truncate:
            normal = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(std))
            mass = normal.cdf((0.5 - mean) / std) - normal.cdf((-0.5 - mean) / std)
            log_q = log_q - torch.log(mass.clamp_min(1e-30))
        return log_q

    def hole_bpd(self, x: Tensor, mu: Tensor, hole: Tensor, n_bits: int) -> Tensor:
        """Bits per missing dim [N] of dequantised x [N, C, H, W] given mu, over the hole (1 = missing)."""
        hole = hole.to(x.dtype).expand_as(x)
        nats = -(self.log_density(x, mu) * hole).flatten(1).sum(1)
        missing = hole.flatten(1).sum(1).clamp_min(1)
        return nats / (missing * math.log(2)) + n_bits


def fit_gaussian_residual(x: Tensor, mu: Tensor, hole: Tensor, bins: int = 8, min_count: int = 30,
                          truncate: bool = True) -> GaussianResidual:
    """Fit b and s on training images: dequantised x [N, C, H, W], predictions mu, hole [N, 1 or C, H, W]."""
    hole = hole.to(torch.bool).expand_as(x)
    residual = (x - mu).double()
    inside = mu[hole].double()
    quantiles = torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1]
    edges = torch.quantile(inside, quantiles).to(mu.dtype) if bins > 1 and inside.numel() else mu.new_zeros(0)
    model = GaussianResidual(edges, torch.zeros(bins, *x.shape[1:], dtype=x.dtype),
                             torch.ones(bins, *x.shape[1:], dtype=x.dtype), truncate)
    k = model.bins_of(mu)
    weight = hole.double()
    count = weight.sum(0)
    pixel_mean = (residual * weight).sum(0) / count.clamp_min(1)
    pixel_var = (((residual - pixel_mean) ** 2) * weight).sum(0) / count.clamp_min(1)
    floor = (2.0 ** -8) ** 2 / 12  # the dequantisation noise's own variance: no cell is narrower
    for b in range(bins):
        w = weight * (k == b)
        n = w.sum(0)
        mean = (residual * w).sum(0) / n.clamp_min(1)
        var = (((residual - mean) ** 2) * w).sum(0) / n.clamp_min(1)
        enough = n >= min_count
        model.offset[b] = torch.where(enough, mean, pixel_mean).to(x.dtype)
        model.scale[b] = torch.where(enough, var, pixel_var).clamp_min(floor).sqrt().to(x.dtype)
    return model
