"""Bits per missing dim of the true hole given the observed pixels: a c-Glow's, and its Gaussian-residual
baseline's (glow.sampling.gaussian_residual), on the same dequantised test images.

A c-Glow's figure is all of -log2 p(x | x_obs, mask) charged to the missing dims:

    hole_bpd = (-log p(x | c) + D n_bits ln 2) / (n_missing ln 2)

with x dequantised by uniform noise exactly as in training (glow.quantize.preprocess). It is an
UPPER bound of the discrete hole's bits: the dequantised density bounds the discrete probability, and
the model also spends bits on the observed pixels, whose dequantisation noise it models (a perfect
model of that noise costs 0, glow.flows.observed). Both the c-Glow and the baseline see the same draws.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glow.conditioning import make_condition
from glow.quantize import bits_per_dim, preprocess, to_uint8
from glow.sampling.batched import chunks, inference_fp32, on_model
from glow.sampling.gaussian_residual import GaussianResidual, fit_gaussian_residual

BOUND = ("upper bound: -log2 p(x | observed) of the uniformly dequantised image (as in training), all of it "
         "charged to the missing dims")


def dequantised(images: Tensor, n_bits: int, seed: int) -> Tensor:
    """uint8 images -> model space with uniform noise from a generator seeded ``seed`` (as in training)."""
    return preprocess(images, n_bits, generator=torch.Generator().manual_seed(seed))


def model_hole_bpd(model, x: Tensor, images: Tensor, mask: Tensor, batch_size: int = 64) -> Tensor:
    """Per-image bits per missing dim [N] of dequantised x under a c-Glow, given the observed pixels
    (bin centres of the uint8 ``images``) and the hole ``mask`` [N, 1, H, W]."""
    centres = preprocess(images, model.n_bits, dequantize=False)
    out = []
    with inference_fp32(model):
        for part in chunks(x.shape[0], batch_size):
            cond = on_model(model, make_condition(centres[part], mask[part]))
            bpd = bits_per_dim(model.log_prob(on_model(model, x[part]), cond), model.num_dims, model.n_bits)
            out.append(bpd.cpu())
    missing = (mask.flatten(1).sum(1) * images.shape[1]).clamp_min(1)
    return torch.cat(out).double() * model.num_dims / missing


def hole_predictions(model, images: Tensor, mask: Tensor, batch_size: int = 256) -> Tensor:
    """mu(c) [N, C, H, W]: the c-Glow's hole predictor on the observed pixels of uint8 images."""
    centres = preprocess(images, model.n_bits, dequantize=False)
    out = []
    with inference_fp32(model):
        for part in chunks(images.shape[0], batch_size):
            out.append(model.hole_prediction(on_model(model, make_condition(centres[part], mask[part]))).cpu())
    return torch.cat(out)


def gaussian_residual_baseline(model, train: Tensor, train_mask: Tensor, test_x: Tensor, test: Tensor,
                               test_mask: Tensor, seed: int) -> tuple[dict, Tensor]:
    """Fit the baseline on uint8 training images and their holes, score it on the dequantised test
    images ``test_x``; returns (figures, its mean fill as uint8 [N, 1, C, H, W]). Figures: hole_bpd of
    the per-pixel-per-context Gaussian truncated to the data box (the strongest variant), and every
    variant's hole_bpd (per pixel; untruncated)."""
    n_bits = model.n_bits
    train_mu, test_mu = hole_predictions(model, train, train_mask), hole_predictions(model, test, test_mask)
    train_x = dequantised(train, n_bits, seed)
    variants = {}
    chosen: GaussianResidual | None = None
    for name, bins, truncate in (("per_pixel_per_context", 8, True), ("per_pixel", 1, True),
                                 ("per_pixel_per_context_untruncated", 8, False)):
        fitted = fit_gaussian_residual(train_x, train_mu, train_mask, bins=bins, truncate=truncate)
        variants[name] = fitted.hole_bpd(test_x, test_mu, test_mask, n_bits).mean().item()
        chosen = chosen or fitted
    mean, _ = chosen.params(test_mu)
    hole = test_mask.bool().expand_as(test_x)
    fill_u8 = torch.where(hole, to_uint8(mean.clamp(-0.5, 0.5 - 2.0 ** -n_bits), n_bits), test)
    figures = {"hole_bpd": variants["per_pixel_per_context"], "hole_bpd_is": BOUND, "hole_bpd_variants": variants,
               "fitted_on": f"{train.shape[0]} training images with the same hole"}
    return figures, fill_u8.unsqueeze(1)
