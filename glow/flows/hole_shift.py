"""The hole predictor's shift: y = x - m * mu(c), the first layer after glow.flows.observed in a c-Glow
(``model.hole_predictor``).

mu(c) is a prediction of the whole image from the condition alone (glow.hole_predictor), and m the
hole mask. Since mu never depends on x, the map is a translation for every condition: volume
preserving (log|det| = 0) with the exact inverse x = y + m * mu(c). The flow then models the residual of
the hole around the prediction, so the conditional mean no longer has to be built up through K steps
of zero-initialised conditioning; SRFlow (Lugmayr et al. 2020) gets the same effect by pretraining its
conditioning network on regression. Here the prediction is trained by regression on the hole
(``module.hole_regression_weight``; glow.hole_predictor says why not by the likelihood), which does not
change what the reported bits/dim mean.
"""

from __future__ import annotations

from torch import Tensor

from glow.flows.base import Flow, zeros_logdet


class HoleShift(Flow):
    """``cond`` is the shift itself, m * mu(c), shaped like x."""

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if cond is None or cond.shape != x.shape:
            raise ValueError("HoleShift needs the masked hole prediction, shaped like x, as cond")
        return x - cond.to(x.dtype), zeros_logdet(x)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if cond is None or cond.shape != y.shape:
            raise ValueError("HoleShift needs the masked hole prediction, shaped like y, as cond")
        return y + cond.to(y.dtype), zeros_logdet(y)
