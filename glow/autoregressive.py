"""MAF and IAF density models on images: the image is flattened to a vector of D = C*H*W values and
modelled by K x (ActNorm on the vector, autoregressive affine layer) over a standard normal.

    log p(y) = log N(z; 0, I) + log|det dz/dy|,   z = flow(flatten(y)),  y the dequantised image

(``logit``: first the elementwise logit transform of MAF/RealNVP, glow.flows.vector.Logit, with its logdet)

so test bits/dim go through glow.quantize exactly as Glow's do.

  MAFModel  density (and training) in one MADE pass per layer; sampling takes D passes per layer.
  IAFModel  sampling in one pass per layer; density (and maximum-likelihood training) takes D passes
            per layer: use it as a distillation student (glow.distill), where it never needs its density
            to train.

Flatten, not a pixel/channel-autoregressive conv: see docs/families.md, "MAF, IAF and distillation", for the
measurement behind the choice. Orders alternate (natural, reversed, ...) or are random per layer
(``order``). MAFModel and IAFModel of the same arguments hold the same parameters in the same places
(``student_state``), so a student can start from its teacher's weights.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch
from torch import Tensor, nn

from glow.density import Capabilities, DensityModel
from glow.dequantization import DEQUANTIZATIONS
from glow.flows.actnorm import actnorms_initialized, initialize_actnorms
from glow.flows.base import Flow, FlowSequence
from glow.flows.iaf import IAF
from glow.flows.maf import MAF
from glow.flows.made import ORDERS, orders
from glow.flows.vector import Logit, VectorActNorm


def check_arguments(num_layers, hidden, hidden_layers, order, logit, **_) -> None:
    """MAF's and IAF's argument checks (their defaults are the constructor's)."""
    if logit is not None and (isinstance(logit, bool) or not isinstance(logit, (int, float)) or not 0 < logit < 0.5):
        raise ValueError(f"model.logit={logit!r} is not allowed: use a number in (0, 0.5), e.g. 1e-6, or null")
    for name, value in [("num_layers", num_layers), ("hidden", hidden), ("hidden_layers", hidden_layers)]:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"model.{name}={value!r} is not allowed: use a positive integer")
    if order not in ORDERS:
        raise ValueError(f"model.order={order!r} is not allowed: use one of {', '.join(ORDERS)}")


class Inverted(Flow):
    """A layer run backwards: forward is its inverse and inverse its forward."""

    def __init__(self, layer: Flow):
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.layer.inverse(x, cond)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.layer(y, cond)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    return (-0.5 * (math.log(2 * math.pi) + z.double() * z.double())).sum(-1).to(
        torch.float64 if z.dtype == torch.float64 else torch.float32)


class AutoregressiveModel(DensityModel):
    """The shared body: ``flow`` maps a flattened image to noise (the density direction)."""

    # MAF: pixel-space MCMC and MAP fills need only its one-pass density; IAF's takes D passes per layer
    inpaint_routes: tuple[str, ...] = ()

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), num_layers: int = 5, hidden: int = 512,
                 hidden_layers: int = 2, order: str = "alternating", actnorm: bool = True,
                 logit: float | None = None, seed: int = 0):
        super().__init__(image_shape)
        check_arguments(num_layers, hidden, hidden_layers, order, logit)
        dim = self.num_dims
        self.capabilities = Capabilities(inpaint_routes=self.inpaint_routes, dequantizations=DEQUANTIZATIONS)
        self.latent_shapes = [(dim,)]
        layers: list[Flow] = [Logit(logit)] if logit is not None else []
        for k, layer_order in enumerate(orders(dim, num_layers, order, seed)):
            if actnorm:  # only the first may amplify a near-constant pixel at init (see VectorActNorm)
                layers.append(VectorActNorm(dim, min_init_std=0.1 if k == 0 else 1.0))
            layers.append(self.autoregressive_layer(dim, hidden, layer_order, hidden_layers))
        self.flow = FlowSequence(layers)

    def autoregressive_layer(self, dim: int, hidden: int, order: Tensor, hidden_layers: int) -> Flow:
        raise NotImplementedError

    def encode(self, x: Tensor, cond: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        z, logdet = self.flow(x.flatten(1))
        return [z], logdet

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        [z], logdet = self.encode(x)
        return standard_normal_log_prob(z) + logdet

    def decode(self, zs: Sequence[Tensor], cond: Tensor | None = None) -> Tensor:
        x, _ = self.flow.inverse(zs[0])
        return x.view(x.shape[0], *self.image_shape)

    def sample_with_log_prob(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n samples (flattened) and their log-density from the sampling pass: log N(u) - log|det dx/du|."""
        anchor = self.anchor
        u = torch.randn((n, self.num_dims), generator=generator, device=anchor.device, dtype=anchor.dtype)
        x, logdet = self.flow.inverse(u)
        return x, standard_normal_log_prob(u) - logdet  # the inverse's logdet is log|det dx/du|

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, cond: Tensor | None = None,
               noise: Sequence[Tensor] | None = None) -> Tensor:
        anchor = self.anchor
        z = noise[0] if noise is not None else torch.randn(n, self.num_dims, device=anchor.device)
        return self.decode([z.to(anchor.dtype) * temperature])

    @torch.no_grad()
    def initialize(self, x: Tensor, cond: Tensor | None = None) -> bool:
        """Data-dependent ActNorm init on an init batch (as Glow's); a no-op once done."""
        return initialize_actnorms(self, x, lambda x: self.log_prob(x))

    @property
    def is_initialized(self) -> bool:
        return actnorms_initialized(self)


def student_state(teacher_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A MAFModel's state dict under an IAFModel's names (its IAF layers sit inside ``Inverted``)."""
    return {re.sub(r"^flow\.layers\.(\d+)\.made\.", r"flow.layers.\1.layer.made.", k): v
            for k, v in teacher_state.items()}


class MAFModel(AutoregressiveModel):
    inpaint_routes = ("mcmc", "map")

    def autoregressive_layer(self, dim, hidden, order, hidden_layers) -> Flow:
        return MAF(dim, hidden, order, hidden_layers)


class IAFModel(AutoregressiveModel):
    def autoregressive_layer(self, dim, hidden, order, hidden_layers) -> Flow:
        return Inverted(IAF(dim, hidden, order, hidden_layers))
