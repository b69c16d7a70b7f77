"""MCMC diagnostics: autocorrelation and effective sample size of a scalar statistic across chains.

``trace`` is [steps, chains] (e.g. each chain's mean over the hole at every post-burn-in step). The
autocovariance is averaged over chains (each chain centred on its own mean) and summed with Geyer's
initial positive sequence, as Stan and ArviZ do; ESS = steps / tau per chain.
"""

from __future__ import annotations

import torch
from torch import Tensor


def autocorrelation(trace: Tensor) -> Tensor:
    """Chain-averaged autocorrelation rho[0..steps-1] of a [steps, chains] trace (rho[0] = 1)."""
    x = trace.double() - trace.double().mean(0, keepdim=True)
    steps = x.shape[0]
    spectrum = torch.fft.rfft(x, n=2 * steps, dim=0)
    acov = torch.fft.irfft(spectrum * spectrum.conj(), n=2 * steps, dim=0)[:steps].mean(1) / steps
    return acov / acov[0].clamp_min(1e-300)


def effective_sample_size(trace: Tensor) -> dict:
    """{lag1_autocorrelation, tau (integrated autocorrelation time), ess_per_chain, steps} of a trace."""
    steps = trace.shape[0]
    if steps < 4:
        return {"lag1_autocorrelation": float("nan"), "tau": float("nan"), "ess_per_chain": float("nan"),
                "steps": steps}
    centred = trace.double() - trace.double().mean(0, keepdim=True)
    if not bool((centred.abs() > 1e-12 * trace.double().abs().max().clamp_min(1e-300)).any()):
        # no chain ever moved: one distinct draw per chain, perfectly correlated
        return {"lag1_autocorrelation": 1.0, "tau": float(steps), "ess_per_chain": 1.0, "steps": steps}
    rho = autocorrelation(trace)
    tau, k = -1.0, 0
    while k + 1 < steps:  # Geyer: sum pairs rho[k] + rho[k+1] while they stay positive
        pair = (rho[k] + rho[k + 1]).item()
        if pair <= 0:
            break
        tau += 2 * pair
        k += 2
    tau = max(tau, 1.0 / steps)
    return {"lag1_autocorrelation": rho[1].item(), "tau": tau, "ess_per_chain": min(steps / tau, float(steps)),
            "steps": steps}


def describe(acceptance_rate: float | None, stats: dict) -> str:
    """One phrase for a page or a summary: the sampler's acceptance, ESS and autocorrelation ('' for none)."""
    if acceptance_rate is None:
        return ""
    parts = [f"acceptance rate {acceptance_rate:.2f}"]
    if isinstance(stats.get("ess_per_chain"), float) and stats["ess_per_chain"] == stats["ess_per_chain"]:
        parts.append(f"ESS {stats['ess_per_chain']:.1f} per chain over {stats.get('steps', '?')} steps")
    if isinstance(stats.get("lag1_autocorrelation"), float):
        parts.append(f"lag-1 autocorrelation {stats['lag1_autocorrelation']:.2f}")
    return ", ".join(parts)
