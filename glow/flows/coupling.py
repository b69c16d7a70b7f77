"""Coupling layers: half of the input conditions an elementwise bijection of the other half.

    y_a = x_a,    y_b = g(x_b; NN(x_a, cond))

so the Jacobian is triangular and log|det| = sum log|g'(x_b)|. The elementwise maps:

* ``additive`` (NICE):        g(x) = x + t                        log|g'| = 0
* ``affine``   (Glow):        g(x) = (x + t) * sigmoid(h + 2)     log|g'| = log sigmoid(h + 2)
  The sigmoid bounds the scale in (0, 1) and starts near 0.88: no exp blow-ups early in training.
  ``affine_scale="tanh"`` (not Glow) uses log|g'| = 3 tanh(h / 3) instead: a scale in
  (e^-3, e^3) that can expand as well as contract. Why: the sigmoid can only contract, so data
  with near-constant pixels (MNIST's black background) are fitted by contracting everything else
  (log-scales down to -6.6 on real MNIST test images after 400 steps); sampling divides by those
  scales and compounds any error into inf. A two-sided bounded scale expands the constant pixels
  instead, and bounds each inverse's gain by e^3.
* ``spline``   (Durkan et al. 2019): a monotone rational-quadratic spline with linear tails.

The split is by channels (first half conditions the second) or, as in RealNVP, by a spatial
checkerboard whose parity alternates between steps. The network's last conv starts at zero, so
every coupling starts as the identity (the spline's zero parameters give the identity map too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from glow.flows.base import Flow, sum_except_batch
from glow.flows.spline import rational_quadratic_spline
from glow import nets  # a module reference: glow.nets imports ActNorm from this package

COUPLINGS = ("additive", "affine", "spline")
AFFINE_SCALES = ("sigmoid", "tanh")
TANH_SCALE_BOUND = 3.0
MASKS = ("channel", "checkerboard")


def checkerboard(height: int, width: int, parity: int, device=None, dtype=None) -> Tensor:
    rows = torch.arange(height, device=device).view(-1, 1)
    cols = torch.arange(width, device=device).view(1, -1)
    return ((rows + cols + parity) % 2 == 0).to(dtype or torch.float32).view(1, 1, height, width)


class Coupling(Flow):
    def __init__(self, channels: int, hidden_channels: int, transform: str = "affine", mask: str = "channel",
                 parity: int = 0, cond_channels: int = 0, spline_bins: int = 8, spline_tail_bound: float = 3.0,
                 inner_actnorm: bool = True, affine_scale: str = "sigmoid"):
        super().__init__()
        if affine_scale not in AFFINE_SCALES:
            raise ValueError(f"affine_scale={affine_scale!r} is not allowed: use one of {', '.join(AFFINE_SCALES)}")
        self.affine_scale = affine_scale
        if transform not in COUPLINGS:
            raise ValueError(f"coupling={transform!r} is not allowed: use one of {', '.join(COUPLINGS)}")
        if mask not in MASKS:
            raise ValueError(f"mask={mask!r} is not allowed: use one of {', '.join(MASKS)}")
        if mask == "channel" and channels < 2:
            raise ValueError(f"a channel coupling needs at least 2 channels, got {channels}")
        self.transform, self.mask, self.parity = transform, mask, parity
        self.bins, self.tail_bound = spline_bins, spline_tail_bound
        self.params_per_dim = {"additive": 1, "affine": 2, "spline": 3 * spline_bins - 1}[transform]
        self.split = channels // 2
        transformed = channels - self.split if mask == "channel" else channels
        conditioner = self.split if mask == "channel" else channels
        self.net = nets.CouplingNet(conditioner, transformed * self.params_per_dim, hidden_channels, cond_channels,
                                    inner_actnorm)

    # -- the elementwise map g and its log-derivative ------------------------------------------
    def _elementwise(self, xb: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        b, c, h, w = xb.shape
        # params come from a network that may run under autocast; the map itself stays in xb's dtype
        params = params.to(xb.dtype).view(b, c, self.params_per_dim, h, w)
        if self.transform == "additive":
            shift = params[:, :, 0]
            return (xb - shift if inverse else xb + shift), torch.zeros_like(xb)
        if self.transform == "affine":
            shift, log_scale = self._shift_log_scale(params)
            if inverse:
                return xb * torch.exp(-log_scale) - shift, -log_scale
            return (xb + shift) * torch.exp(log_scale), log_scale
        params = params.permute(0, 1, 3, 4, 2)  # [B, C, H, W, P]
        k = self.bins
        return rational_quadratic_spline(xb, params[..., :k], params[..., k:2 * k], params[..., 2 * k:],
                                         inverse=inverse, tail_bound=self.tail_bound)

    def _shift_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """The affine map's shift and log-scale from the network's [B, C, 2, H, W] output."""
        shift, raw_scale = params[:, :, 0], params[:, :, 1]
        if self.affine_scale == "sigmoid":
            return shift, F.logsigmoid(raw_scale + 2.0)
        return shift, TANH_SCALE_BOUND * torch.tanh(raw_scale / TANH_SCALE_BOUND)

    def _couple(self, x: Tensor, cond: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        if self.mask == "channel":
            xa, xb = x[:, :self.split], x[:, self.split:]
            yb, elem_logdet = self._elementwise(xb, self.net(xa, cond), inverse)
            return torch.cat([xa, yb], dim=1), sum_except_batch(elem_logdet)
        m = checkerboard(x.shape[-2], x.shape[-1], self.parity, x.device, x.dtype)
        yb, elem_logdet = self._elementwise(x, self.net(x * m, cond), inverse)
        return x * m + yb * (1 - m), sum_except_batch(elem_logdet * (1 - m))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, cond, inverse=False)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(y, cond, inverse=True)

    def recompute(self, y: Tensor, cond: Tensor | None = None):
        """For glow.flows.memory.InvertibleBlock's backward: the input x from the output y, and the
        forward's graph rebuilt on it, with the network evaluated ONCE (inverse() then forward() would
        evaluate it twice; the network is most of a step's cost).

        Written with two leaves, u = the conditioning part of x and v = x itself (channel mask: the
        transformed half), so the network's input need not wait for x. The gradient of the input is
        then d/du (scattered back to where u came from) + d/dv. Returns
        (x, [u, v], leaf_grads -> x_grad, y, logdet).
        """
        if self.mask == "channel":
            u = y[:, :self.split].detach().requires_grad_(True)
            params = self.net(u, cond)
            yb = y[:, self.split:]
            if self.transform == "affine":  # the log-scale and its exp once, for both directions
                b, c, h, w = yb.shape
                shift, log_scale = self._shift_log_scale(params.to(yb.dtype).view(b, c, 2, h, w))
                scale = torch.exp(log_scale)
                with torch.no_grad():
                    v = (yb / scale - shift).requires_grad_(True)
                yb, elem_logdet = (v + shift) * scale, log_scale
            else:
                with torch.no_grad():
                    xb, _ = self._elementwise(yb, params, inverse=True)
                v = xb.detach().requires_grad_(True)
                yb, elem_logdet = self._elementwise(v, params, inverse=False)
            x = torch.cat([u.detach(), v.detach()], dim=1)
            return (x, [u, v], lambda gu, gv: torch.cat([gu, gv], dim=1), torch.cat([u, yb], dim=1),
                    sum_except_batch(elem_logdet))
        m = checkerboard(y.shape[-2], y.shape[-1], self.parity, y.device, y.dtype)
        u = (y * m).detach().requires_grad_(True)  # = x * m: the coupling passes it through unchanged
        params = self.net(u, cond)
        with torch.no_grad():
            xb, _ = self._elementwise(y, params, inverse=True)
            x = y * m + xb * (1 - m)
        v = x.detach().requires_grad_(True)
        yb, elem_logdet = self._elementwise(v, params, inverse=False)
        return x, [u, v], lambda gu, gv: gu * m + gv, u + yb * (1 - m), sum_except_batch(elem_logdet * (1 - m))
