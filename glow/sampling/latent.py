"""Inpainting with any unconditional Glow by MCMC in latent space (the "latent" route).

A Glow maps standard-normal draws eps to images, x = G(eps) (``Glow.decode_noise``; the split priors'
means and stds are part of G), so its prior is N(0, I) whatever the model. Given the observed
pixels x_obs (mask == 0) we sample

    pi_sigma(eps)  ∝  N(eps; 0, I) * prod_obs N(x_obs; G(eps)_obs, sigma^2)

by preconditioned MALA on eps (glow.sampling.latent_mala: a warm-up, a burn-in whose step size and
preconditioner adapt towards an acceptance of ``target_accept``, then a frozen kernel over which the
acceptance rate, autocorrelation and ESS are measured). sigma is the observation noise of the target:
as sigma -> 0 it is the model's conditional p(x_miss | x_obs); a small positive sigma (default 0.05 of
the pixel range) keeps the target smooth enough for MALA to move, and the observed pixels are pasted
back exactly. Completions are G(eps) clamped to the data box.

Why latent space: in pixel space the flow's density is extremely peaked across the data manifold,
so pixel MALA needs tiny steps and does not move (docs/inpainting.md); in eps space the prior is
isotropic and most of the stiffness is in the observed pixels only. The chains start by
sampling-importance-resampling of prior draws (``init="sir"``), from the encoding of the image with
its hole filled (``init="fill"``: each image's observed mean), or from prior draws (``init="prior"``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from glow.sampling.inpaint_result import InpaintOptions, InpaintResult, as_result, repeat_rows
from glow.sampling.latent_mala import Decode, Schedule, latent_mala

INITS = ("sir", "fill", "prior")


def schedule_for(steps: int, sigma: float = Schedule.sigma, step_size: float | None = None) -> Schedule:
    """``steps`` split as the default 80 are: warm-up 25, burn-in 25, measured sampling the rest."""
    warmup = max(1, round(steps * 25 / 80)) if steps >= 3 else 0
    burn_in = round(steps * 25 / 80)
    options = {} if step_size is None else {"step_size": step_size}
    return Schedule(warmup=warmup, burn_in=burn_in, sampling=steps - warmup - burn_in, sigma=sigma, **options)


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


def latent_inpaint_samples(model, x_rep: Tensor, hole_rep: Tensor, steps: int = 80, temperature: float = 1.0,
                           init: str = "sir", schedule: Schedule | None = None, sir_draws: int = 128,
                           generator: torch.Generator | None = None,
                           progress: Callable[[int], None] | None = None) -> tuple[Tensor, dict]:
    """One chain per row of x_rep (model space) with hole_rep (1 = missing, image-shaped).
    Returns (G(eps) clamped to [-0.5, 0.5], observed pixels pasted back from x_rep; stats)."""
    if init not in INITS:
        raise ValueError(f"init={init!r} is not allowed for the latent sampler: use one of {', '.join(INITS)}")
    schedule = schedule or schedule_for(steps)
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
        starts = []
        firsts = [0] + [i for i in range(1, x_rep.shape[0]) if not (torch.equal(x_rep[i], x_rep[i - 1])
                                                                    and torch.equal(hole_rep[i], hole_rep[i - 1]))]
        for first, end in zip(firsts, firsts[1:] + [x_rep.shape[0]]):
            draws = torch.randn(sir_draws, dims, generator=generator, dtype=x_rep.dtype).to(x_rep.device)
            start, _ = sir_start(decode, draws, x_rep[first:first + 1], 1 - hole_rep[first:first + 1],
                                 end - first, generator)
            starts.append(start)
        eps0 = torch.cat(starts)
    eps, stats = latent_mala(decode, eps0, x_rep, 1 - hole_rep, hole_rep, schedule, generator, progress)
    with torch.no_grad():
        images = decode(eps).clamp(-0.5, 0.5)
    stats["init"] = init
    return torch.where(hole_rep.bool(), images, x_rep), stats


@torch.no_grad()
def latent_route(model, x: Tensor, mask: Tensor, n: int, options: InpaintOptions) -> InpaintResult:
    """n completions per image from an unconditional Glow by preconditioned MALA on its latent draws; the
    result's stats hold the acceptance rate and the ESS of the hole mean."""
    x_rep, m_rep = repeat_rows(x, mask, n)
    was_training = model.training
    model.eval()
    try:
        filled, stats = latent_inpaint_samples(model, x_rep, m_rep, temperature=options.temperature,
                                               init=options.init or "sir",
                                               schedule=schedule_for(options.steps, step_size=options.step_size),
                                               generator=options.generator, progress=options.progress)
    finally:
        model.train(was_training)
    return as_result(filled, x_rep, m_rep, x, n, "latent", stats["acceptance_rate"], stats)
