"""The latent route's sampler (glow.sampling.latent): preconditioned MALA on a Glow's standard-normal draws.

Target, for flat draws eps [B, D] and the observed pixels x_obs (``observed`` = 1):

    log pi_sigma(eps) = -|eps|^2 / 2 - |(G(eps) - x_obs) * observed|^2 / (2 sigma^2)

Three phases (``Schedule``):

1. warm-up: Adam steps on -log pi_sigma with sigma annealed geometrically from ``sigma_start`` to
   ``sigma`` (an optimiser only moves the start; it crosses the stiff observed-pixel term in few steps);
2. burn-in: MALA at the final sigma whose kernel adapts every step, per chain: a diagonal preconditioner
   M = 1 / (1 + diag(J^T J) / sigma^2) from the Gauss-Newton curvature of the observed-pixel term
   (J = dG_obs/d eps; diag(J^T J) estimated as E[(J^T v)^2], v ~ N(0, I) on the observed pixels, one
   probe per step, averaged), and the step size h by Robbins-Monro on log h towards ``target_accept``
   (Andrieu & Thoms 2008: log h += (alpha - target) / (t + 1)^0.6);
3. sampling: the kernel frozen (so the chain is a valid Metropolis-Hastings chain for pi_sigma), over
   which the acceptance rate and the autocorrelation / ESS of each chain's hole mean are measured
   (glow.sampling.diagnostics).

The proposal is eps' = eps + (h^2 / 2) M grad + h sqrt(M) xi, xi ~ N(0, I); its density enters the
acceptance ratio, so with M and h fixed the chain leaves pi_sigma invariant (tested on a Gaussian).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from glow.sampling.diagnostics import effective_sample_size

Decode = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Schedule:
    warmup: int = 25        # Adam steps with sigma annealed
    burn_in: int = 25       # MALA steps adapting h and the preconditioner
    sampling: int = 30      # MALA steps with the kernel frozen, measured
    sigma: float = 0.05     # the observation noise of the target (model units; pixels span 1)
    sigma_start: float = 0.2
    step_size: float = 0.5  # the initial h (in the preconditioned metric)
    warmup_lr: float = 0.15
    target_accept: float = 0.6

    @property
    def steps(self) -> int:
        return self.warmup + self.burn_in + self.sampling

    def sigma_at(self, step: int) -> float:
        if step >= self.warmup - 1 or self.warmup <= 1:
            return self.sigma
        return self.sigma_start * (self.sigma / self.sigma_start) ** (step / (self.warmup - 1))


class Target:
    """log pi_sigma and its gradient for a decoder G, with one Gauss-Newton probe when asked."""

    def __init__(self, decode: Decode, x_obs: Tensor, observed: Tensor, hole: Tensor, generator=None):
        self.decode, self.x_obs, self.generator = decode, x_obs, generator
        self.observed, self.hole = observed.to(x_obs.dtype), hole.to(x_obs.dtype)
        self.hole_size = self.hole.flatten(1).sum(1).clamp_min(1)

    def __call__(self, eps: Tensor, sigma: float, probe: bool = False) -> dict:
        """{log_target [B], grad [B, D], hole_mean [B], rss [B], and curvature [B, D] when probe}."""
        eps = eps.detach().requires_grad_(True)
        with torch.enable_grad():
            x = self.decode(eps)
            rss = (((x - self.x_obs) * self.observed) ** 2).flatten(1).sum(1)
            grad, = torch.autograd.grad(rss.sum(), eps, retain_graph=probe)
            if probe:
                v = torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device) * self.observed
                jtv, = torch.autograd.grad(x, eps, grad_outputs=v)
        finite = torch.isfinite(rss)
        rss = torch.where(finite, rss.detach(), torch.full_like(rss, math.inf))
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        eps = eps.detach()
        out = {"log_target": -0.5 * (eps ** 2).sum(1) - 0.5 * rss / sigma ** 2,
               "grad": -eps - 0.5 * grad / sigma ** 2, "rss": rss,
               "hole_mean": (x.detach() * self.hole).flatten(1).sum(1) / self.hole_size}
        if probe:
            out["curvature"] = torch.nan_to_num(jtv, nan=0.0, posinf=0.0, neginf=0.0) ** 2
        return out


def _log_q(to: Tensor, frm: Tensor, grad_frm: Tensor, h: Tensor, m: Tensor) -> Tensor:
    """log density (up to a constant shared by both directions) of proposing ``to`` from ``frm``."""
    mean = frm + 0.5 * (h ** 2)[:, None] * m * grad_frm
    return -(((to - mean) ** 2) / m).sum(1) / (2 * h ** 2)


def latent_mala(decode: Decode, eps0: Tensor, x_obs: Tensor, observed: Tensor, hole: Tensor,
                schedule: Schedule = Schedule(), generator: torch.Generator | None = None,
                progress: Callable[[int], None] | None = None) -> tuple[Tensor, dict]:
    """Run the three phases from eps0 [B, D]; returns (final eps, stats)."""
    started = time.time()
    target = Target(decode, x_obs, observed, hole, generator)
    eps = eps0.detach().clone()
    if schedule.warmup:
        eps.requires_grad_(True)
        optimizer = torch.optim.Adam([eps], lr=schedule.warmup_lr)
        for step in range(schedule.warmup):
            optimizer.zero_grad()
            eps.grad = -target(eps, schedule.sigma_at(step))["grad"]
            optimizer.step()
            if progress is not None:
                progress(step)
        eps = eps.detach()
    sigma, chains = schedule.sigma, eps.shape[0]
    state = target(eps, sigma, probe=schedule.burn_in > 0)
    curvature = state.get("curvature", torch.zeros_like(eps))
    m = torch.ones_like(eps)
    h = torch.full((chains,), float(schedule.step_size), dtype=eps.dtype, device=eps.device)
    accepted, trace, burn_accept = [], [], []
    for step in range(schedule.burn_in + schedule.sampling):
        adapting = step < schedule.burn_in
        if adapting:  # the preconditioner from the curvature seen so far, renewed every step of the burn-in
            m = 1.0 / (1.0 + curvature / (step + 1) / sigma ** 2)
        noise = torch.randn(eps.shape, generator=generator, dtype=eps.dtype).to(eps.device)
        proposal = eps + 0.5 * (h ** 2)[:, None] * m * state["grad"] + h[:, None] * m.sqrt() * noise
        new = target(proposal, sigma, probe=adapting and step + 1 < schedule.burn_in)
        log_alpha = (new["log_target"] + _log_q(eps, proposal, new["grad"], h, m)
                     - state["log_target"] - _log_q(proposal, eps, state["grad"], h, m))
        log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf)
        uniform = torch.rand(chains, generator=generator, dtype=eps.dtype).to(eps.device)
        accept = torch.log(uniform) < log_alpha
        eps = torch.where(accept[:, None], proposal, eps)
        for key in ("log_target", "rss", "hole_mean"):
            state[key] = torch.where(accept, new[key], state[key])
        state["grad"] = torch.where(accept[:, None], new["grad"], state["grad"])
        if adapting:
            if "curvature" in new:
                curvature = curvature + new["curvature"]
            alpha = torch.exp(log_alpha.clamp(max=0.0))
            h = h * torch.exp((alpha - schedule.target_accept) / (step + 1) ** 0.6)
            burn_accept.append(accept.float().mean().item())
        else:
            accepted.append(accept.float().mean().item())
            trace.append(state["hole_mean"].clone())
        if progress is not None:
            progress(schedule.warmup + step)
    stats = {"acceptance_rate": sum(accepted) / len(accepted) if accepted else float("nan"),
             "burn_in_acceptance_rate": sum(burn_accept) / len(burn_accept) if burn_accept else float("nan"),
             "sigma": sigma, "sigma_start": schedule.sigma_start, "step_size": h.mean().item(),
             "preconditioner_min": m.min().item(), "warmup_steps": schedule.warmup,
             "burn_in_steps": schedule.burn_in, "measured_steps": len(trace),
             "sampler_seconds": time.time() - started,
             "obs_rmse": (state["rss"] / target.observed.flatten(1).sum(1).clamp_min(1)).sqrt().mean().item()}
    if trace:
        stats.update(effective_sample_size(torch.stack(trace)))
    return eps, stats
