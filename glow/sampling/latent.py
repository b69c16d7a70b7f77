"""Inpainting with any unconditional Glow by MCMC in latent space (the "latent" route).

A Glow maps standard-normal draws eps to images, x = G(eps) (``Glow.decode_noise``; the split priors'
means and stds are part of G), so its prior is N(0, I) whatever the model. Given the observed
pixels x_obs (mask == 0) we sample

    pi_sigma(eps)  ∝  N(eps; 0, I) * prod_obs N(x_obs; G(eps)_obs, sigma^2)

by MALA on eps, with sigma annealed geometrically from ``sigma_start`` to ``sigma_end`` (default the
quantisation width 1 / 2^n_bits) over the first ``anneal_fraction`` of the steps, then held. As sigma
-> 0 this is the model's conditional p(x_miss | x_obs). Each step is a Metropolis-adjusted kernel
for the current pi_sigma; during the annealing each chain's step size adapts (Robbins-Monro on
log h towards ``target_accept``, and shrinks with sigma); in the final phase the kernel is fixed and
the acceptance rate and the autocorrelation of each chain's hole mean are measured
(glow.sampling.diagnostics). Completions are G(eps) clamped to the data box with the observed
pixels pasted back exactly.

Why latent space: in pixel space the flow's density is extremely peaked across the data manifold,
so pixel MALA needs tiny steps and does not move (docs/inpainting.md); in eps space the prior is
isotropic and most of the stiffness is in the observed pixels only. The chains start from the
encoding of the image with its hole filled (``init="fill"``: each image's observed mean), or from
prior draws (``init="prior"``).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
from torch import Tensor

from glow.sampling.diagnostics import effective_sample_size
from glow.sampling.inpaint_result import InpaintOptions, InpaintResult, as_result, repeat_rows

Decode = Callable[[Tensor], Tensor]
INITS = ("sir", "fill", "prior")


def annealed_latent_mala(decode: Decode, eps0: Tensor, x_obs: Tensor, observed: Tensor, steps: int = 40,
                         sigma_start: float = 0.1, sigma_end: float = 1 / 256, anneal_fraction: float = 0.6,
                         adapt_fraction: float = 0.4, step_size: float = 0.01, burn_in_lr: float = 0.05,
                         target_accept: float = 0.574, generator: torch.Generator | None = None,
                         hole: Tensor | None = None, progress: Callable[[int], None] | None = None
                         ) -> tuple[Tensor, dict]:
    """Burn-in, then MALA on flat draws eps [B, D] for pi_sigma_end (module docstring).

    ``decode`` maps [B, D] -> images; ``observed`` (1 = observed) and ``x_obs`` are image-shaped.
    Phases: (1) the first ``anneal_fraction`` of the steps are a burn-in: Adam steps on -log pi_sigma
    with sigma annealed geometrically from ``sigma_start`` to ``sigma_end`` (a burn-in only moves the
    start, not the target; Adam's per-coordinate scaling copes with the stiffness of the observed
    pixels that makes Langevin crawl); (2) ``adapt_fraction`` of the rest are MALA steps whose step
    size adapts per chain towards ``target_accept``; (3) the rest are MALA with a fixed kernel, where
    the acceptance rate and the autocorrelation / ESS of each chain's hole mean are measured.
    Returns (final eps, stats).
    """
    chains = eps0.shape[0]
    observed = observed.to(x_obs.dtype)
    hole = (1 - observed) if hole is None else hole.to(x_obs.dtype)
    hole_size = hole.flatten(1).sum(1).clamp_min(1)
    burn_steps = int(round(steps * anneal_fraction))
    adapt_steps = int(round((steps - burn_steps) * adapt_fraction))

    def sigma_at(step: int) -> float:
        if step >= burn_steps - 1 or burn_steps <= 1:
            return sigma_end
        return sigma_start * (sigma_end / sigma_start) ** (step / (burn_steps - 1))

    def evaluate(eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(residual sum of squares on the observed pixels, -1/2 its gradient, hole mean)."""
        eps = eps.detach().requires_grad_(True)
        with torch.enable_grad():
            x = decode(eps)
            rss = (((x - x_obs) * observed) ** 2).flatten(1).sum(1)
            grad, = torch.autograd.grad(rss.sum(), eps)
        rss = torch.where(torch.isfinite(rss), rss.detach(), torch.full_like(rss, math.inf))
        grad = torch.nan_to_num(-0.5 * grad, nan=0.0, posinf=0.0, neginf=0.0)
        return rss, grad, (x.detach() * hole).flatten(1).sum(1) / hole_size

    def log_target(eps: Tensor, rss: Tensor, sigma: float) -> Tensor:
        return -0.5 * (eps ** 2).sum(1) - 0.5 * rss / sigma ** 2

    def gradient(eps: Tensor, lik_grad: Tensor, sigma: float) -> Tensor:
        return -eps + lik_grad / sigma ** 2

    def log_q(to: Tensor, frm: Tensor, grad_frm: Tensor, h: Tensor) -> Tensor:
        return -((to - frm - 0.5 * (h ** 2)[:, None] * grad_frm) ** 2).sum(1) / (2 * h ** 2)

    started = time.time()
    eps = eps0.detach().clone()
    if burn_steps:
        eps.requires_grad_(True)
        optimizer = torch.optim.Adam([eps], lr=burn_in_lr)
        for step in range(burn_steps):
            rss, lik_grad, _ = evaluate(eps)
            optimizer.zero_grad()
            eps.grad = -gradient(eps.detach(), lik_grad, sigma_at(step))
            optimizer.step()
            if progress is not None:
                progress(step)
        eps = eps.detach()
    rss, lik_grad, hole_mean = evaluate(eps)
    sigma = sigma_end
    grad = gradient(eps, lik_grad, sigma)
    h = torch.full((chains,), float(step_size), dtype=eps.dtype, device=eps.device)
    accepted, counted, trace = 0.0, 0, []
    for step in range(burn_steps, steps):
        noise = torch.randn(eps.shape, generator=generator, dtype=eps.dtype).to(eps.device)
        proposal = eps + 0.5 * (h ** 2)[:, None] * grad + h[:, None] * noise
        rss_new, lik_grad_new, hole_mean_new = evaluate(proposal)
        grad_new = gradient(proposal, lik_grad_new, sigma)
        log_alpha = (log_target(proposal, rss_new, sigma) + log_q(eps, proposal, grad_new, h)
                     - log_target(eps, rss, sigma) - log_q(proposal, eps, grad, h))
        log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf)
        uniform = torch.rand(chains, generator=generator, dtype=eps.dtype).to(eps.device)
        accept = torch.log(uniform) < log_alpha
        eps = torch.where(accept[:, None], proposal, eps)
        rss = torch.where(accept, rss_new, rss)
        grad = torch.where(accept[:, None], grad_new, grad)
        hole_mean = torch.where(accept, hole_mean_new, hole_mean)
        if step < burn_steps + adapt_steps:  # aggressive: few adaptation steps are affordable
            h = h * torch.exp(2.0 * (torch.exp(torch.clamp(log_alpha, max=0.0)) - target_accept))
        else:
            accepted += accept.float().sum().item()
            counted += chains
            trace.append(hole_mean.clone())
        if progress is not None:
            progress(step)
    stats = {"acceptance_rate": accepted / counted if counted else float("nan"), "final_sigma": sigma_end,
             "sigma_start": sigma_start, "final_step_size": h.mean().item(), "burn_in_steps": burn_steps,
             "adapt_steps": adapt_steps, "measured_steps": len(trace), "sampler_seconds": time.time() - started,
             "obs_rmse": (rss / observed.flatten(1).sum(1).clamp_min(1)).sqrt().mean().item()}
    if trace:
        stats.update(effective_sample_size(torch.stack(trace)))
    return eps.detach(), stats


def flatten_noise(noise: list[Tensor]) -> Tensor:
    return torch.cat([t.flatten(1) for t in noise], 1)


def unflatten_noise(flat: Tensor, shapes: list[tuple[int, ...]]) -> list[Tensor]:
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(flat[:, start:start + size].view(flat.shape[0], *shape))
        start += size
    return out


def filled_start(x: Tensor, hole: Tensor) -> Tensor:
    """x with each image's hole filled by the mean of its observed pixels (a neutral warm start)."""
    observed = 1 - hole
    mean = (x * observed).flatten(1).sum(1) / observed.flatten(1).sum(1).clamp_min(1)
    return torch.where(hole.bool(), mean.view(-1, *([1] * (x.dim() - 1))).expand_as(x), x)


def sir_start(decode: Decode, draws: Tensor, x_obs: Tensor, observed: Tensor, n: int,
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Sampling-importance-resampling start for the chains of ONE image: ``draws`` [M, D] from the
    prior N(0, I) are weighted by N(x_obs; G(eps)_obs, sigma^2) and n are resampled. sigma is the
    smallest of a geometric grid whose weights keep an effective sample size >= n (adaptive
    tempering, as in SMC), so the n chains start from distinct, plausible draws of pi_sigma.
    Returns (n starts [n, D], sigma)."""
    with torch.no_grad():
        rss = torch.cat([(((decode(chunk) - x_obs) * observed) ** 2).flatten(1).sum(1)
                         for chunk in draws.split(64)])
    rss = torch.nan_to_num(rss, nan=math.inf)
    sigma = torch.tensor(1.0, dtype=draws.dtype)
    for candidate in torch.logspace(1, -3, 41, dtype=draws.dtype):
        weights = torch.softmax(-0.5 * rss / candidate ** 2, 0)
        if 1.0 / (weights ** 2).sum() < n:
            break
        sigma = candidate
    weights = torch.softmax(-0.5 * rss / sigma ** 2, 0)
    picks = torch.multinomial(weights.float().cpu(), n, replacement=True, generator=generator)
    return draws[picks.to(draws.device)], sigma


def latent_inpaint_samples(model, x_rep: Tensor, hole_rep: Tensor, steps: int = 60, temperature: float = 1.0,
                           init: str = "sir", sigma_start: float | None = None, sigma_end: float | None = None,
                           sir_draws: int = 128,
                           step_size: float = 0.01, generator: torch.Generator | None = None,
                           progress: Callable[[int], None] | None = None) -> tuple[Tensor, dict]:
    """One chain per row of x_rep (model space) with hole_rep (1 = missing, image-shaped).
    Returns (G(eps) clamped to [-0.5, 0.5], observed pixels pasted back from x_rep; stats)."""
    if init not in INITS:
        raise ValueError(f"init={init!r} is not allowed for the latent sampler: use one of {', '.join(INITS)}")
    shapes = [tuple(s) for s in model.latent_shapes]
    dims = sum(math.prod(s) for s in shapes)

    def decode(flat: Tensor) -> Tensor:
        return model.decode_noise(unflatten_noise(flat, shapes), temperature)

    if init == "fill":
        with torch.no_grad():
            eps0 = flatten_noise(model.encode_noise(filled_start(x_rep, hole_rep), temperature=temperature))
    elif init == "prior":
        eps0 = torch.randn(x_rep.shape[0], dims, generator=generator, dtype=x_rep.dtype).to(x_rep.device)
    else:  # sir: chains of one image are consecutive rows (repeat_interleave) with the same image and hole
        starts, sigmas = [], []
        rows = torch.arange(x_rep.shape[0])
        firsts = [0] + [i for i in range(1, len(rows)) if not (torch.equal(x_rep[i], x_rep[i - 1])
                                                             and torch.equal(hole_rep[i], hole_rep[i - 1]))]
        for first, end in zip(firsts, firsts[1:] + [x_rep.shape[0]]):
            draws = torch.randn(sir_draws, dims, generator=generator, dtype=x_rep.dtype).to(x_rep.device)
            start, sigma = sir_start(decode, draws, x_rep[first:first + 1], 1 - hole_rep[first:first + 1],
                                     end - first, generator)
            starts.append(start)
            sigmas.append(sigma.item())
        eps0 = torch.cat(starts)
        if sigma_start is None:  # one schedule for all chains: from the widest image's SIR sigma
            sigma_start = max(sigmas)

    sigma_end = 1.0 / 2 ** model.n_bits if sigma_end is None else sigma_end
    sigma_start = 0.1 if sigma_start is None else sigma_start
    eps, stats = annealed_latent_mala(decode, eps0, x_rep, 1 - hole_rep, steps=steps, sigma_start=sigma_start,
                                      sigma_end=sigma_end, step_size=step_size, generator=generator,
                                      progress=progress)
    with torch.no_grad():
        images = decode(eps).clamp(-0.5, 0.5)
    stats["init"] = init
    return torch.where(hole_rep.bool(), images, x_rep), stats


@torch.no_grad()
def latent_route(model, x: Tensor, mask: Tensor, n: int, options: InpaintOptions) -> InpaintResult:
    """n completions per image from an unconditional Glow by annealed MALA on its latent draws; the
    result's stats hold the acceptance rate and the ESS of the hole mean."""
    x_rep, m_rep = repeat_rows(x, mask, n)
    was_training = model.training
    model.eval()
    try:
        filled, stats = latent_inpaint_samples(model, x_rep, m_rep, steps=options.steps,
                                               temperature=options.temperature, init=options.init or "sir",
                                               step_size=0.01 if options.step_size is None else options.step_size,
                                               generator=options.generator, progress=options.progress)
    finally:
        model.train(was_training)
    return as_result(filled, x_rep, m_rep, x, n, "latent", stats["acceptance_rate"], stats)
