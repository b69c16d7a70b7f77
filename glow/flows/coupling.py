"""Coupling layers: half of the input conditions an elementwise bijection of the other half.

    y_a = x_a,    y_b = g(x_b; NN(x_a, cond))

so the Jacobian is triangular and log|det| = sum log|g'(x_b)|. The elementwise maps g are classes
(glow.flows.elementwise: additive, affine with its bounded scale; glow.flows.spline: the spline),
named in ONE registry, ``TRANSFORMS``; ``check_coupling_arguments`` beside it is the one check of
model.coupling, model.mask and model.affine_scale (Coupling and glow.model_args call it). A new
coupling is its class and its line in TRANSFORMS.

The split is by channels (first half conditions the second) or, as in RealNVP, by a spatial
checkerboard whose parity alternates between steps. The network's last conv starts at zero, so
every coupling starts as the identity (Glow's sigmoid-scaled affine: as a contraction by 0.88).
"""

from __future__ import annotations

import torch
from torch import Tensor

from glow.flows.base import Flow, sum_except_batch
from glow.flows.elementwise import AFFINE_SCALES, AdditiveTransform, AffineTransform, ElementwiseTransform
from glow.flows.nets import CouplingNet
from glow.flows.spline import SplineTransform

# model.coupling -> its elementwise map
TRANSFORMS: dict[str, type[ElementwiseTransform]] = {
    "additive": AdditiveTransform,
    "affine": AffineTransform,
    "spline": SplineTransform,
}
COUPLINGS = tuple(TRANSFORMS)
MASKS = ("channel", "checkerboard")


def check_coupling_arguments(coupling: str = "affine", mask: str = "channel", affine_scale: str = "sigmoid") -> None:
    """One-line ValueErrors naming ``model.<key>``, its value and what is allowed."""
    for name, value, allowed in (("coupling", coupling, COUPLINGS), ("mask", mask, MASKS),
                                 ("affine_scale", affine_scale, tuple(AFFINE_SCALES))):
        if value not in allowed:
            raise ValueError(f"model.{name}={value!r} is not allowed: use one of {', '.join(allowed)}")


def checkerboard(height: int, width: int, parity: int, device=None, dtype=None) -> Tensor:
    rows = torch.arange(height, device=device).view(-1, 1)
    cols = torch.arange(width, device=device).view(1, -1)
    return ((rows + cols + parity) % 2 == 0).to(dtype or torch.float32).view(1, 1, height, width)


class Coupling(Flow):
    def __init__(self, channels: int, hidden_channels: int, transform: str = "affine", mask: str = "channel",
                 parity: int = 0, cond_channels: int = 0, spline_bins: int = 8, spline_tail_bound: float = 3.0,
                 inner_actnorm: bool = True, affine_scale: str = "sigmoid", input_bound: float | None = None):
        super().__init__()
        check_coupling_arguments(transform, mask, affine_scale)
        if mask == "channel" and channels < 2:
            raise ValueError(f"a channel coupling needs at least 2 channels, got {channels}")
        self.transform = TRANSFORMS[transform].from_options(
            affine_scale=affine_scale, spline_bins=spline_bins, spline_tail_bound=spline_tail_bound)
        self.mask, self.parity = mask, parity
        self.split = channels // 2
        transformed = channels - self.split if mask == "channel" else channels
        conditioner = self.split if mask == "channel" else channels
        self.net = CouplingNet(conditioner, transformed * self.transform.params_per_dim, hidden_channels,
                               cond_channels, inner_actnorm, input_bound)

    def _params(self, params: Tensor, xb: Tensor) -> Tensor:
        """The network's output as [B, C, P, H, W] in xb's dtype: the network may run under autocast; the
        map itself stays in xb's dtype."""
        b, c, h, w = xb.shape
        return params.to(xb.dtype).view(b, c, self.transform.params_per_dim, h, w)

    def _elementwise(self, xb: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        params = self._params(params, xb)
        return self.transform.inverse(xb, params) if inverse else self.transform.forward(xb, params)

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
            v, yb, elem_logdet = self.transform.rebuild(yb, self._params(params, yb))
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
