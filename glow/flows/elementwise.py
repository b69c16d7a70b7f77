"""The elementwise maps of a coupling layer: y = g(x; params), one g per transformed element.

A coupling (glow.flows.coupling) computes ``params`` [B, C, P, H, W] from the untouched half and
hands them, with the half to transform [B, C, H, W], to one of these. Each returns (output,
log|dg/dx| per element) forward and (input, log|dx/dy| per element) inverse; the coupling masks and
sums them. The maps here:

* ``AdditiveTransform`` (NICE):  g(x) = x + t                   log|g'| = 0
* ``AffineTransform``   (Glow):  g(x) = (x + t) * exp(s(h))     log|g'| = s(h), with the scale's
  bound ``s`` one of AFFINE_SCALES:

  * ``sigmoid`` (Glow): s(h) = log sigmoid(h + 2), a scale in (0, 1) starting near 0.88: no exp
    blow-ups early in training.
  * ``tanh`` (not Glow): s(h) = 3 tanh(h / 3), a scale in (e^-3, e^3) that can expand as well as
    contract. Why: the sigmoid can only contract, so data with near-constant pixels (MNIST's black
    background) are fitted by contracting everything else (log-scales down to -6.6 on real MNIST
    test images after 400 steps); sampling divides by those scales and compounds any error into
    inf. A two-sided bounded scale expands the constant pixels instead, and bounds each inverse's
    gain by e^3.

The spline (Durkan et al. 2019) is ``glow.flows.spline.SplineTransform``. All-zero params give the
identity (Glow's sigmoid scale: a contraction by sigmoid(2) ~ 0.88), so a coupling whose network's
last layer starts at zero starts at (or near) the identity. A new map is a subclass (its own file, or
this one) plus its name in glow.flows.coupling.TRANSFORMS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

TANH_SCALE_BOUND = 3.0


def _sigmoid_log_scale(raw: Tensor) -> Tensor:
    return F.logsigmoid(raw + 2.0)


def _tanh_log_scale(raw: Tensor) -> Tensor:
    return TANH_SCALE_BOUND * torch.tanh(raw / TANH_SCALE_BOUND)


AFFINE_SCALES = {"sigmoid": _sigmoid_log_scale, "tanh": _tanh_log_scale}


class ElementwiseTransform:
    """An elementwise bijection g(x; params) with ``params_per_dim`` parameters per element.

    Not an nn.Module: it holds no parameters (the coupling's network makes them), so a Coupling's
    state_dict is its network's alone.
    """

    params_per_dim: int = 1

    @classmethod
    def from_options(cls, **options) -> ElementwiseTransform:
        """The map for Coupling's keyword options (affine_scale, spline_bins, ...): each reads its own."""
        return cls()

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """(g(x), log|g'(x)|) for x [B, C, H, W] and params [B, C, P, H, W]."""
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """(g^-1(y), log|dg^-1/dy|)."""
        raise NotImplementedError

    def rebuild(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For Coupling.recompute: (v, g(v), log|g'(v)|) where v = g^-1(y) is a fresh leaf that
        requires grad, and g(v) carries the graph to v and params. A map whose two directions share
        an expensive part may override this to compute it once."""
        with torch.no_grad():
            x, _ = self.inverse(y, params)
        v = x.detach().requires_grad_(True)
        return (v, *self.forward(v, params))


class AdditiveTransform(ElementwiseTransform):
    """g(x) = x + t: volume-preserving (NICE)."""

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return x + params[:, :, 0], torch.zeros_like(x)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return y - params[:, :, 0], torch.zeros_like(y)


class AffineTransform(ElementwiseTransform):
    """g(x) = (x + t) * exp(s(h)), with the bounded log-scale s named by ``scale`` (AFFINE_SCALES)."""

    params_per_dim = 2

    def __init__(self, scale: str = "sigmoid"):
        self.scale = scale
        self._log_scale = AFFINE_SCALES[scale]

    @classmethod
    def from_options(cls, **options) -> AffineTransform:
        return cls(options["affine_scale"])

    def shift_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """The shift t and log-scale s(h) from params [B, C, 2, H, W]."""
        return params[:, :, 0], self._log_scale(params[:, :, 1])

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = self.shift_log_scale(params)
        return (x + shift) * torch.exp(log_scale), log_scale

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = self.shift_log_scale(params)
        return y * torch.exp(-log_scale) - shift, -log_scale

    def rebuild(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # the log-scale and its exp once, for both directions
        shift, log_scale = self.shift_log_scale(params)
        scale = torch.exp(log_scale)
        with torch.no_grad():
            v = (y / scale - shift).requires_grad_(True)
        return v, (v + shift) * scale, log_scale
