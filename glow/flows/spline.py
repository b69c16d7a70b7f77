r"""Monotone rational-quadratic spline with linear (identity) tails.

Durkan, Bekasov, Murray & Papamakarios (2019), "Neural Spline Flows".

On :math:`[-B, B]` the map is a piecewise rational-quadratic function through
:math:`K+1` knots :math:`(x_k, y_k)`, with :math:`x_0 = y_0 = -B`, :math:`x_K = y_K = B`
and positive knot derivatives :math:`\delta_k`. Outside :math:`[-B, B]` it is the
identity; :math:`\delta_0 = \delta_K = 1` makes the whole map :math:`C^1`.

Parameterisation (``u`` = unconstrained inputs, ``m`` = minimum values):
    widths   :math:`w_k = m_w + (1 - K m_w)\,\mathrm{softmax}(u^w)_k` (times :math:`2B`),
    heights  :math:`h_k` likewise,
    interior :math:`\delta_k = m_\delta + \mathrm{softplus}(u^\delta_k + c)`, with
    :math:`c = \log(e^{1 - m_\delta} - 1)` so that :math:`u = 0` gives :math:`\delta = 1`.
Hence all-zero parameters give the identity map.

Forward, for :math:`x` in bin :math:`k`, with :math:`s_k = h_k / w_k` and
:math:`\xi = (x - x_k)/w_k \in [0, 1]`:

.. math::
    y = y_k + \frac{h_k\,[s_k \xi^2 + \delta_k \xi(1-\xi)]}
                   {s_k + (\delta_{k+1} + \delta_k - 2 s_k)\,\xi(1-\xi)}, \qquad
    \frac{dy}{dx} = \frac{s_k^2\,[\delta_{k+1}\xi^2 + 2 s_k \xi(1-\xi) + \delta_k (1-\xi)^2]}
                         {[s_k + (\delta_{k+1} + \delta_k - 2 s_k)\,\xi(1-\xi)]^2}.

Inverse: :math:`\xi` solves :math:`a\xi^2 + b\xi + c = 0` with

.. math::
    a = h_k(s_k - \delta_k) + (y - y_k)(\delta_{k+1} + \delta_k - 2 s_k), \quad
    b = h_k \delta_k - (y - y_k)(\delta_{k+1} + \delta_k - 2 s_k), \quad
    c = -s_k (y - y_k),

taking the root :math:`\xi = 2c / (-b - \sqrt{b^2 - 4ac})` (stable, no cancellation),
and :math:`\log|dx/dy| = -\log|dy/dx|` evaluated at that :math:`\xi`.

``SplineTransform`` is this map as a coupling's elementwise transform (``model.coupling=spline``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from glow.flows.elementwise import ElementwiseTransform


def _knots(unnormalized: Tensor, min_bin: float, bound: float) -> tuple[Tensor, Tensor]:
    """Softmax bin sizes -> (knot positions [.., K+1] on [-bound, bound], bin sizes [.., K])."""
    num_bins = unnormalized.shape[-1]
    if min_bin * num_bins > 1.0:
        raise ValueError("minimal bin size too large for the number of bins")
    sizes = min_bin + (1 - min_bin * num_bins) * torch.softmax(unnormalized, dim=-1)
    knots = F.pad(torch.cumsum(sizes, dim=-1), (1, 0), value=0.0)
    knots = 2 * bound * knots - bound
    knots[..., 0], knots[..., -1] = -bound, bound  # exact endpoints despite rounding
    return knots, knots[..., 1:] - knots[..., :-1]


def _gather(params: Tensor, idx: Tensor) -> Tensor:
    return params.gather(-1, idx)[..., 0]


def rational_quadratic_spline(inputs: Tensor, unnormalized_widths: Tensor, unnormalized_heights: Tensor,
                              unnormalized_derivatives: Tensor, inverse: bool = False, tail_bound: float = 3.0,
                              min_bin_width: float = 1e-3, min_bin_height: float = 1e-3, min_derivative: float = 1e-3
                              ) -> tuple[Tensor, Tensor]:
    """inputs: any shape S; widths/heights: S + [K]; derivatives: S + [K-1] (interior knots; the boundary
    derivatives are 1 so the tails are the identity).

    Returns (outputs of shape S, elementwise log|d outputs / d inputs| of shape S). With inverse=True it maps
    outputs back to inputs, and the logabsdet is that of the inverse map (so forward and inverse cancel).
    """
    num_bins = unnormalized_widths.shape[-1]
    if unnormalized_heights.shape[-1] != num_bins or unnormalized_derivatives.shape[-1] != num_bins - 1:
        raise ValueError("expected widths/heights [..., K] and derivatives [..., K-1]")
    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    # Identity on the tails; the spline is evaluated only on the inside subset, so that no
    # out-of-range arithmetic (and hence no NaN/inf gradient) ever touches tail elements.
    outputs = torch.where(inside, torch.zeros_like(inputs), inputs)
    logabsdet = torch.zeros_like(inputs)

    x, dtype = inputs[inside], inputs.dtype  # all arithmetic happens in the input dtype
    cumwidths, widths = _knots(unnormalized_widths[inside].to(dtype), min_bin_width, tail_bound)
    cumheights, heights = _knots(unnormalized_heights[inside].to(dtype), min_bin_height, tail_bound)
    shift = math.log(math.expm1(1.0 - min_derivative))  # softplus(0 + shift) + min_derivative == 1
    derivatives = min_derivative + F.softplus(F.pad(unnormalized_derivatives[inside].to(dtype), (1, 1)) + shift)

    knots = (cumheights if inverse else cumwidths).detach().clone()
    knots[..., -1] += 1e-6  # so that x == tail_bound falls in the last bin
    idx = torch.searchsorted(knots.contiguous(), x.detach()[..., None], right=True) - 1
    idx = idx.clamp(0, num_bins - 1)

    x_k, w_k = _gather(cumwidths, idx), _gather(widths, idx)
    y_k, h_k = _gather(cumheights, idx), _gather(heights, idx)
    d_k, d_k1 = _gather(derivatives, idx), _gather(derivatives, idx + 1)
    s_k = h_k / w_k
    curvature = d_k1 + d_k - 2 * s_k

    if inverse:  # solve the quadratic for xi in [0, 1]
        dy = x - y_k
        a = h_k * (s_k - d_k) + dy * curvature
        b = h_k * d_k - dy * curvature
        c = -s_k * dy
        disc = (b.pow(2) - 4 * a * c).clamp_min(0.0)
        xi = (2 * c) / (-b - torch.sqrt(disc))
        out = x_k + xi * w_k
    else:
        xi = (x - x_k) / w_k
    xi_1m = xi * (1 - xi)
    denominator = s_k + curvature * xi_1m
    if not inverse:
        out = y_k + h_k * (s_k * xi.pow(2) + d_k * xi_1m) / denominator
    deriv_num = s_k.pow(2) * (d_k1 * xi.pow(2) + 2 * s_k * xi_1m + d_k * (1 - xi).pow(2))
    lad = torch.log(deriv_num) - 2 * torch.log(denominator)

    outputs = outputs.index_put((inside,), out)
    logabsdet = logabsdet.index_put((inside,), -lad if inverse else lad)
    return outputs, logabsdet


class SplineTransform(ElementwiseTransform):
    """The coupling's ``spline`` map: per element, a spline of ``bins`` bins on [-tail_bound, tail_bound]
    from 3 * bins - 1 parameters (widths, heights, interior derivatives)."""

    def __init__(self, bins: int = 8, tail_bound: float = 3.0):
        self.bins, self.tail_bound = bins, tail_bound
        self.params_per_dim = 3 * bins - 1

    @classmethod
    def from_options(cls, **options) -> SplineTransform:
        return cls(options["spline_bins"], options["spline_tail_bound"])

    def _apply(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        params = params.permute(0, 1, 3, 4, 2)  # [B, C, H, W, P]
        k = self.bins
        return rational_quadratic_spline(x, params[..., :k], params[..., k:2 * k], params[..., 2 * k:],
                                         inverse=inverse, tail_bound=self.tail_bound)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._apply(x, params, inverse=False)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._apply(y, params, inverse=True)
