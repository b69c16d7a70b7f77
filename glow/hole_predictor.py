"""The c-Glow's hole predictor (``model.hole_predictor``): K hypotheses mu_1(c) .. mu_K(c) of the whole
image from the inpainting condition (masked image, hole), and their weights pi(c), which
glow.flows.hole_shift subtracts from the hole (``model.hole_hypotheses``, K = 1 by default).

Its own small U-Net (glow.encoders) with a zero-initialised conv on the U-Net's finest features, laid
out to the image's size by depth-to-space (so with K = 1 it starts at mu = 0 and the shift at the
identity), and for K > 1 a zero-initialised linear map of the coarsest features to the weights' logits.

With K = 1 the flow models the residual x - mu(c) and p(x | c) is one flow. With K > 1 the model is
a mixture of K flows sharing every weight, component k modelling the residual around mu_k (and, with
``model.hole_features``, seeing mu_k among its condition features):

    p(x | c) = sum_k pi_k(c) p_flow(x - m * mu_k(c) | c, k)

log_prob is that exact mixture (K passes). Training takes one pass: the winner k* = argmin_k of the
squared error of mu_k over the hole, and log pi_k* + log p_flow(x | c, k*) <= log p(x | c), a bound
whose log pi_k* term trains the weights towards the winner (glow_objectives.with_hole_regression).
The hypotheses themselves are fit by squared error on the hole only, "relaxed winner takes all"
(Rupprecht et al. 2017): (1 - eps) * error of the winner + eps * the mean error of the others, so
that every hypothesis stays near the data; they become distinct completions (a 4 closed or open at
the top), which is what makes the samples differ coherently rather than by pixel noise.

Why the flow sees mu with its gradient stopped: trained by the likelihood as well, mu moved away from
the conditional mean, because a constant shift keeps MNIST's background spike (every black pixel
dequantised within 1/256 of -0.5) in one place, which the flow models more cheaply than a residual
that moves with the prediction. Measured after 300 steps of experiment=inpaint_mnist, PSNR of mu over
the 14x14 centre hole of 200 test images: 7.68 dB trained by both (the encoder shared with the flow),
9.53 dB trained by squared error alone (as here). Either way mu depends on the condition only, so each
component is an exact bijection and the bits/dim stay exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glow.encoders import UNetEncoder
from glow.flows.nets import ZeroConv2d, ZeroLinear

RELAX = 0.05  # relaxed winner-takes-all: the share of the squared error on the losing hypotheses


class HolePredictor(nn.Module):
    def __init__(self, image_channels: int, levels: int, channels: int = 32, hypotheses: int = 1):
        super().__init__()
        self.hypotheses = hypotheses
        self.encoder = UNetEncoder(image_channels + 1, levels, channels)
        self.head = ZeroConv2d(channels, 4 * image_channels * hypotheses)
        self.weights = ZeroLinear(channels, hypotheses) if hypotheses > 1 else None
        if hypotheses > 1:  # distinct starts, or winner-takes-all would train one hypothesis only
            nn.init.normal_(self.head.conv.weight, std=1e-3, generator=torch.Generator().manual_seed(0))

    def forward(self, condition: Tensor) -> tuple[Tensor, Tensor]:
        """(masked image, hole) [B, C + 1, H, W] -> (mu [B, K, C, H, W], log pi [B, K])."""
        features = self.encoder(condition)
        mu = F.pixel_shuffle(self.head(features[0]), 2)
        mu = mu.view(mu.shape[0], self.hypotheses, -1, *mu.shape[-2:])
        if self.weights is None:
            return mu, mu.new_zeros(mu.shape[0], 1)
        return mu, torch.log_softmax(self.weights(features[-1].mean(dim=(2, 3))).float(), dim=1)


def hole_errors(mu: Tensor, x: Tensor, hole: Tensor) -> Tensor:
    """Mean squared error over the hole [B, K] of each hypothesis mu [B, K, C, H, W] against x."""
    hole = hole.to(x.dtype).expand_as(x)
    squared = ((mu.float() - x.float().unsqueeze(1)) ** 2 * hole.unsqueeze(1)).flatten(2).sum(2)
    return squared / hole.flatten(1).sum(1, keepdim=True).clamp_min(1)


def regression_loss(mu: Tensor, x: Tensor, hole: Tensor, winner: Tensor) -> Tensor:
    """Relaxed winner-takes-all squared error over the hole, averaged over the batch."""
    errors = hole_errors(mu, x, hole)
    if errors.shape[1] == 1:
        return errors.mean()
    won = F.one_hot(winner, errors.shape[1]).to(errors.dtype)
    per_image = (1 - RELAX) * (errors * won).sum(1) + RELAX * (errors * (1 - won)).sum(1) / (errors.shape[1] - 1)
    return per_image.mean()
