"""Inpainting by conditional sampling: fill the missing pixels (mask == 1) given the observed ones.

``ROUTES`` is the one table of routes. A model lists the routes it supports in
``capabilities.inpaint_routes`` (glow.density), best first, and ``method=auto`` takes the first:

    cglow   a model trained with conditional=image samples p(x | x_obs, mask) directly (cglow_route.py)
    latent  adaptive, preconditioned MALA on an unconditional Glow's standard-normal draws (latent.py)
    mcmc    MALA in pixel space on any exact, differentiable density: Glow, MAF (pixel_mcmc.py)
    map     a MAP fill by projected gradient ascent on the same density (pixel_mcmc.py)

Adding a route: its function ``(model, x, mask, n, InpaintOptions) -> InpaintResult`` in its own
file, a row here, and its name in the capabilities of the families that support it. In every route
the observed pixels of the output are the input's values, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor

from glow.density import DensityModel
from glow.errors import UnsupportedError, fail
from glow.quantize import to_uint8
from glow.sampling.cglow_route import cglow_route
from glow.sampling.inpaint_result import InpaintOptions, InpaintResult, broadcast_mask
from glow.sampling.latent import latent_route
from glow.sampling.pixel_mcmc import map_route, mcmc_route


@dataclass(frozen=True)
class Route:
    run: Callable[[DensityModel, Tensor, Tensor, int, InpaintOptions], InpaintResult]
    temperature: float  # the default temperature
    steps: int          # the default sampler steps (0: one pass, no progress to show)
    summary: str
    has_density: bool = False  # it has the hole's conditional density (scripts/evaluate_inpainting.py's hole_bpd)


ROUTES = {
    "cglow": Route(cglow_route, 0.8, 0, "one ancestral sample of an inpainting model (model.conditional=image)",
                   has_density=True),
    "latent": Route(latent_route, 1.0, 80, "adaptive, preconditioned MALA on an unconditional Glow's latent draws"),
    "mcmc": Route(mcmc_route, 1.0, 300, "MALA in pixel space on the model's exact density"),
    "map": Route(map_route, 1.0, 0, "a MAP fill: gradient ascent on the model's exact density"),
}
METHODS = ("auto", *ROUTES)


def pick_route(model: DensityModel, method: str) -> str:
    """The route ``method`` names for this model (auto: the model's first), or one line saying why not."""
    if method not in METHODS:
        fail("method", method, f"use one of {', '.join(METHODS)}")
    supported = model.capabilities.inpaint_routes
    if not supported:
        raise UnsupportedError(f"task=inpaint is not allowed: this checkpoint's model ({model.family}, "
                               f"conditional={model.kind.name}) has no inpainting route")
    if method == "auto":
        return supported[0]
    if method not in supported:
        fail("method", method, f"this checkpoint's model ({model.family}, conditional={model.kind.name}) "
                               f"supports {', '.join(supported)}: use auto or one of them")
    return method


def planned_steps(method: str, options: InpaintOptions) -> int:
    """How many times the route will call ``options.progress`` (0: it runs in one pass)."""
    if method == "map":
        return options.map_steps
    return ROUTES[method].steps if options.steps is None else options.steps


def inpaint(model: DensityModel, x: Tensor, mask: Tensor, n: int = 8, method: str = "auto",
            temperature: float | None = None, steps: int | None = None, step_size: float | None = None,
            map_steps: int = 200, init: str | None = None, generator: torch.Generator | None = None,
            progress: Callable[[int], None] | None = None) -> InpaintResult:
    """n completions of each image x (model space) where mask == 1; observed pixels stay exactly x.

    ``temperature`` and ``steps`` default to the route's (ROUTES); ``init`` to the route's own
    (latent: sir, see glow.sampling.latent; mcmc and map: noise).
    """
    if n < 1:
        raise ValueError(f"n={n!r} is not allowed: use a positive integer")
    method = pick_route(model, method)
    route = ROUTES[method]
    options = InpaintOptions(temperature, steps, step_size, map_steps, init, generator, progress)
    options = replace(options, temperature=route.temperature if temperature is None else temperature,
                      steps=route.steps if steps is None else steps)
    return route.run(model, x, mask, n, options)


def completions_uint8(result: InpaintResult, images_uint8: Tensor, mask: Tensor, n_bits: int) -> Tensor:
    """Completions as uint8 [B, n, C, H, W], with the observed pixels copied bit-exactly from the input."""
    filled = to_uint8(result.completions, n_bits)
    keep = (broadcast_mask(mask, images_uint8.float()) == 0).unsqueeze(1).expand_as(filled)
    return torch.where(keep, images_uint8.unsqueeze(1).expand_as(filled), filled)
