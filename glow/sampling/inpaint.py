"""Inpainting by conditional sampling: fill the missing pixels (mask == 1) given the observed ones.

Routes (``inpaint(..., method=)``; ``auto`` picks c-Glow or latent from the model):

* **c-Glow** (``cglow``; ``model.conditional == "image"``; Lu & Huang 2020): the flow models
  p(x | x_obs, mask) directly, so a completion is one ancestral sample at temperature T.
* **latent MCMC with an unconditional Glow** (``latent``, the default for unconditional models):
  annealed MALA on the model's standard-normal latent draws with a Gaussian likelihood on the
  observed pixels (glow.sampling.latent).
* **pixel MCMC with an unconditional Glow** (``mcmc``): sample the missing pixels from
  p(x_miss | x_obs) ∝ p(x_obs, x_miss) using the model's exact log-density, by Metropolis-adjusted
  Langevin (MALA) in pixel space with the observed pixels pinned. The target is p^(1/T) restricted
  to the data box [-0.5, 0.5]^D (proposals outside are rejected, which keeps detailed balance).
  During the first ``adapt_fraction`` of the steps each chain tunes its step size towards the
  acceptance rate ``target_accept``; after that the kernel is fixed and the reported acceptance
  rate is measured. ``map_steps > 0`` instead runs projected gradient ascent on log p (a MAP fill).

In every route the observed pixels of the output are the input's values, exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from glow.conditioning import inpaint_method, make_condition
from glow.model import Glow
from glow.quantize import to_uint8
from glow.sampling.latent import latent_inpaint_samples

LogProb = Callable[[Tensor], Tensor]


@dataclass
class InpaintResult:
    completions: Tensor              # [B, n, C, H, W], model space; observed pixels == input
    method: str                      # "cglow" | "latent" | "mcmc" | "map"
    acceptance_rate: float | None = None
    stats: dict = field(default_factory=dict)


def _broadcast_mask(mask: Tensor, x: Tensor) -> Tensor:
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    return mask.to(x.dtype).expand_as(x)


@torch.no_grad()
def cglow_inpaint(model: Glow, x: Tensor, mask: Tensor, n: int, temperature: float = 0.8) -> InpaintResult:
    """n completions per image from a conditional Glow: x ~ p(x | x_obs, mask) at temperature T."""
    inpaint_method(model, "cglow")
    b = x.shape[0]
    full_mask = _broadcast_mask(mask, x)
    x_rep = x.repeat_interleave(n, dim=0)
    m_rep = full_mask.repeat_interleave(n, dim=0)
    cond = make_condition(x_rep, m_rep[:, :1])
    samples = model.sample(b * n, temperature=temperature, cond=cond)
    completions = torch.where(m_rep.bool(), samples.clamp(-0.5, 0.5), x_rep)
    return InpaintResult(completions.view(b, n, *x.shape[1:]), "cglow")


def mala(log_prob: LogProb, x_init: Tensor, mask: Tensor, steps: int = 300, step_size: float = 0.02,
         temperature: float = 1.0, bounds: tuple[float, float] | None = (-0.5, 0.5), adapt_fraction: float = 0.5,
         target_accept: float = 0.574, generator: torch.Generator | None = None,
         progress: Callable[[int], None] | None = None) -> tuple[Tensor, float]:
    """MALA on the coordinates where mask == 1, one independent chain per row of x_init.

    Target: exp(log_prob(x) / temperature), restricted to ``bounds`` when given. Returns the final
    states and the acceptance rate over the non-adaptive steps.
    """
    free = _broadcast_mask(mask, x_init).bool()
    chains = x_init.shape[0]
    eps = torch.full((chains,), float(step_size), dtype=x_init.dtype, device=x_init.device)
    view = (chains,) + (1,) * (x_init.dim() - 1)

    def energy_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            lp = log_prob(x).to(x.dtype) / temperature
            grad, = torch.autograd.grad(lp.sum(), x)
        lp, grad = lp.detach(), torch.where(free, grad, torch.zeros_like(grad))
        lp = torch.where(torch.isfinite(lp), lp, torch.full_like(lp, -math.inf))
        return lp, torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)

    def log_q(to: Tensor, frm: Tensor, grad_frm: Tensor, e: Tensor) -> Tensor:
        diff = torch.where(free, to - frm - 0.5 * (e ** 2).view(view) * grad_frm, torch.zeros_like(to))
        return -(diff ** 2).flatten(1).sum(1) / (2 * e ** 2)

    x = x_init.clone()
    lp, grad = energy_and_grad(x)
    adapt_steps = int(steps * adapt_fraction)
    accepted, counted = 0.0, 0
    for step in range(steps):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        proposal = x + 0.5 * (eps ** 2).view(view) * grad + eps.view(view) * noise
        proposal = torch.where(free, proposal, x)
        lp_new, grad_new = energy_and_grad(proposal)
        if bounds is not None:
            inside = ((proposal >= bounds[0]) & (proposal <= bounds[1])).flatten(1).all(1)
            lp_new = torch.where(inside, lp_new, torch.full_like(lp_new, -math.inf))
        log_alpha = lp_new + log_q(x, proposal, grad_new, eps) - lp - log_q(proposal, x, grad, eps)
        log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf)
        uniform = torch.rand(chains, generator=generator, dtype=x.dtype).to(x.device)
        accept = torch.log(uniform) < log_alpha
        x = torch.where(accept.view(view), proposal, x)
        lp = torch.where(accept, lp_new, lp)
        grad = torch.where(accept.view(view), grad_new, grad)
        if step < adapt_steps:  # Robbins-Monro on log(step size), per chain; frozen afterwards
            rate = torch.exp(torch.clamp(log_alpha, max=0.0))
            eps = eps * torch.exp((rate - target_accept) * (1.0 / math.sqrt(step + 1)))
        else:
            accepted += accept.float().sum().item()
            counted += chains
        if progress is not None:
            progress(step)
    return x.detach(), accepted / max(counted, 1)


def map_fill(log_prob: LogProb, x_init: Tensor, mask: Tensor, steps: int = 200, lr: float = 0.01,
             bounds: tuple[float, float] = (-0.5, 0.5)) -> Tensor:
    """Projected gradient ascent (Adam) on log p over the missing pixels: a MAP completion per chain."""
    free = _broadcast_mask(mask, x_init).bool()
    fixed = x_init.detach()
    hole = x_init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([hole], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        with torch.enable_grad():
            x = torch.where(free, hole, fixed)
            loss = -log_prob(x).sum()
            loss.backward()
        optimizer.step()
        with torch.no_grad():
            hole.clamp_(*bounds)
    return torch.where(free, hole.detach(), fixed)


def mcmc_inpaint(model: Glow, x: Tensor, mask: Tensor, n: int, steps: int = 300, step_size: float = 0.02,
                 temperature: float = 1.0, map_steps: int = 0, init: str = "noise",
                 generator: torch.Generator | None = None, progress: Callable[[int], None] | None = None
                 ) -> InpaintResult:
    """n completions per image from an unconditional Glow by MALA (or a MAP fill when map_steps > 0)."""
    inpaint_method(model, "mcmc")
    if init not in ("noise", "mean"):
        raise ValueError(f"init={init!r} is not allowed: use noise or mean")
    b = x.shape[0]
    full_mask = _broadcast_mask(mask, x)
    x_rep = x.repeat_interleave(n, dim=0)
    m_rep = full_mask.repeat_interleave(n, dim=0)
    if init == "noise":
        start_values = torch.rand(x_rep.shape, generator=generator, dtype=x.dtype).to(x.device) - 0.5
    else:  # the mean of the observed pixels of each image
        observed_mean = (x_rep * (1 - m_rep)).flatten(1).sum(1) / (1 - m_rep).flatten(1).sum(1).clamp_min(1)
        start_values = observed_mean.view(-1, *([1] * (x.dim() - 1))).expand_as(x_rep)
    start = torch.where(m_rep.bool(), start_values, x_rep)
    was_training = model.training
    model.eval()
    try:
        if map_steps > 0:
            filled = map_fill(model.log_prob, start, m_rep, steps=map_steps)
            method, acceptance = "map", None
        else:
            filled, acceptance = mala(model.log_prob, start, m_rep, steps=steps, step_size=step_size,
                                      temperature=temperature, generator=generator, progress=progress)
            method = "mcmc"
    finally:
        model.train(was_training)
    completions = torch.where(m_rep.bool(), filled, x_rep)
    return InpaintResult(completions.view(b, n, *x.shape[1:]), method, acceptance)


@torch.no_grad()
def latent_inpaint(model: Glow, x: Tensor, mask: Tensor, n: int, steps: int = 40, temperature: float = 1.0,
                   init: str = "sir", step_size: float = 0.01, generator: torch.Generator | None = None,
                   progress: Callable[[int], None] | None = None) -> InpaintResult:
    """n completions per image from an unconditional Glow by annealed MALA on its latent draws
    (glow.sampling.latent); the result's stats hold the acceptance rate and the ESS of the hole mean."""
    inpaint_method(model, "latent")
    b = x.shape[0]
    x_rep = x.repeat_interleave(n, dim=0)
    m_rep = _broadcast_mask(mask, x).repeat_interleave(n, dim=0)
    was_training = model.training
    model.eval()
    try:
        filled, stats = latent_inpaint_samples(model, x_rep, m_rep, steps=steps, temperature=temperature,
                                               init=init, step_size=step_size, generator=generator,
                                               progress=progress)
    finally:
        model.train(was_training)
    completions = torch.where(m_rep.bool(), filled, x_rep)  # observed pixels: the input's, exactly
    return InpaintResult(completions.view(b, n, *x.shape[1:]), "latent", stats["acceptance_rate"], stats)


METHODS = ("auto", "cglow", "latent", "mcmc", "map")
DEFAULT_TEMPERATURE = {"cglow": 0.8, "latent": 1.0, "mcmc": 1.0, "map": 1.0}
# sampler steps when none are given (c-Glow samples in one pass)
DEFAULT_STEPS = {"cglow": 0, "latent": 40, "mcmc": 300, "map": 300}


def inpaint(model: Glow, x: Tensor, mask: Tensor, n: int = 8, method: str = "auto", temperature: float | None = None,
            steps: int | None = None, step_size: float | None = None, map_steps: int = 200, init: str | None = None,
            generator: torch.Generator | None = None, progress: Callable[[int], None] | None = None
            ) -> InpaintResult:
    """n completions of each image x (model space) where mask == 1; observed pixels stay exactly x.

    ``method="auto"`` uses the c-Glow route for a model trained with ``conditional=image`` and
    MALA on the latent draws (``latent``) otherwise; ``mcmc`` is pixel-space MALA, ``map`` a MAP
    fill. ``temperature`` defaults to 0.8 for c-Glow sampling and 1.0 otherwise; ``steps`` to 40
    (latent) or 300 (pixel MALA); ``init`` to fill sir (latent: see glow.sampling.latent) or noise (pixel MALA).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not allowed: use one of {', '.join(METHODS)}")
    if n < 1:
        raise ValueError(f"n={n!r} is not allowed: use a positive integer")
    method = inpaint_method(model, method) if method == "auto" else method
    temperature = DEFAULT_TEMPERATURE[method] if temperature is None else temperature
    if method == "cglow":
        return cglow_inpaint(model, x, mask, n, temperature=temperature)
    if method == "latent":
        steps = DEFAULT_STEPS["latent"] if steps is None else steps
        return latent_inpaint(model, x, mask, n, steps=steps, temperature=temperature,
                              init=init or "sir", step_size=0.01 if step_size is None else step_size,
                              generator=generator, progress=progress)
    steps, step_size, init = steps or DEFAULT_STEPS[method], step_size or 0.02, init or "noise"
    return mcmc_inpaint(model, x, mask, n, steps=steps, step_size=step_size, temperature=temperature,
                        map_steps=map_steps if method == "map" else 0, init=init, generator=generator,
                        progress=progress)


def completions_uint8(result: InpaintResult, images_uint8: Tensor, mask: Tensor, n_bits: int) -> Tensor:
    """Completions as uint8 [B, n, C, H, W], with the observed pixels copied bit-exactly from the input."""
    filled = to_uint8(result.completions, n_bits)
    keep = (_broadcast_mask(mask, images_uint8.float()) == 0).unsqueeze(1).expand_as(filled)
    return torch.where(keep, images_uint8.unsqueeze(1).expand_as(filled), filled)
