"""The pixel-space inpainting routes of an unconditional model with an exact, differentiable density.

* ``mcmc``: sample the missing pixels from p(x_miss | x_obs) ∝ p(x_obs, x_miss) by Metropolis-adjusted
  Langevin (MALA) in pixel space with the observed pixels pinned. The target is p^(1/T) restricted
  to the data box [-0.5, 0.5]^D (proposals outside are rejected, which keeps detailed balance).
  During the first ``adapt_fraction`` of the steps each chain tunes its step size towards the
  acceptance rate ``target_accept``; after that the kernel is fixed and the reported acceptance
  rate is measured.
* ``map``: projected gradient ascent on log p over the missing pixels (a MAP fill).

Any family whose capabilities list these routes can use them (Glow, MAF): they need only log_prob.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from glow.density import DensityModel
from glow.sampling.inpaint_result import InpaintOptions, InpaintResult, as_result, broadcast_mask, repeat_rows

LogProb = Callable[[Tensor], Tensor]
INITS = ("noise", "mean")


def mala(log_prob: LogProb, x_init: Tensor, mask: Tensor, steps: int = 300, step_size: float = 0.02,
         temperature: float = 1.0, bounds: tuple[float, float] | None = (-0.5, 0.5), adapt_fraction: float = 0.5,
         target_accept: float = 0.574, generator: torch.Generator | None = None,
         progress: Callable[[int], None] | None = None) -> tuple[Tensor, float]:
    """MALA on the coordinates where mask == 1, one independent chain per row of x_init.

    Target: exp(log_prob(x) / temperature), restricted to ``bounds`` when given. Returns the final
    states and the acceptance rate over the non-adaptive steps.
    """
    free = broadcast_mask(mask, x_init).bool()
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
             bounds: tuple[float, float] = (-0.5, 0.5), progress: Callable[[int], None] | None = None) -> Tensor:
    """Projected gradient ascent (Adam) on log p over the missing pixels: a MAP completion per chain."""
    free = broadcast_mask(mask, x_init).bool()
    fixed = x_init.detach()
    hole = x_init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([hole], lr=lr)
    for step in range(steps):
        optimizer.zero_grad()
        with torch.enable_grad():
            x = torch.where(free, hole, fixed)
            loss = -log_prob(x).sum()
            loss.backward()
        optimizer.step()
        with torch.no_grad():
            hole.clamp_(*bounds)
        if progress is not None:
            progress(step)
    return torch.where(free, hole.detach(), fixed)


def _start(x_rep: Tensor, m_rep: Tensor, init: str, generator: torch.Generator | None) -> Tensor:
    """The chains' start: uniform noise in the hole, or each image's observed mean."""
    if init not in INITS:
        raise ValueError(f"init={init!r} is not allowed for pixel MCMC: use one of {', '.join(INITS)}")
    if init == "noise":
        values = torch.rand(x_rep.shape, generator=generator, dtype=x_rep.dtype).to(x_rep.device) - 0.5
    else:
        observed_mean = (x_rep * (1 - m_rep)).flatten(1).sum(1) / (1 - m_rep).flatten(1).sum(1).clamp_min(1)
        values = observed_mean.view(-1, *([1] * (x_rep.dim() - 1))).expand_as(x_rep)
    return torch.where(m_rep.bool(), values, x_rep)


def _in_eval_mode(model: DensityModel, run: Callable[[], Tensor]) -> Tensor:
    was_training = model.training
    model.eval()
    try:
        return run()
    finally:
        model.train(was_training)


def mcmc_route(model: DensityModel, x: Tensor, mask: Tensor, n: int, options: InpaintOptions) -> InpaintResult:
    """n completions per image by pixel-space MALA on the model's exact log-density."""
    x_rep, m_rep = repeat_rows(x, mask, n)
    start = _start(x_rep, m_rep, options.init or "noise", options.generator)
    acceptance = []

    def run() -> Tensor:
        filled, rate = mala(model.log_prob, start, m_rep, steps=options.steps, step_size=options.step_size or 0.02,
                            temperature=options.temperature, generator=options.generator, progress=options.progress)
        acceptance.append(rate)
        return filled

    filled = _in_eval_mode(model, run)
    return as_result(filled, x_rep, m_rep, x, n, "mcmc", acceptance[0])


def map_route(model: DensityModel, x: Tensor, mask: Tensor, n: int, options: InpaintOptions) -> InpaintResult:
    """n MAP fills per image (they differ only by their start)."""
    x_rep, m_rep = repeat_rows(x, mask, n)
    start = _start(x_rep, m_rep, options.init or "noise", options.generator)
    filled = _in_eval_mode(model, lambda: map_fill(model.log_prob, start, m_rep, steps=options.map_steps,
                                                   progress=options.progress))
    return as_result(filled, x_rep, m_rep, x, n, "map")
