"""The latent-space inpainting sampler (glow.sampling.latent) targets the right distribution.

A Glow whose couplings are still the identity (zero-initialised output convs) is an affine map of
its standard-normal draws, x = A eps + b, so with the sampler's Gaussian likelihood on the observed
pixels the target of the hole is Gaussian in closed form:

    eps | x_o ~ N(m, P^-1),  P = I + A_o^T A_o / sigma^2,  m = P^-1 A_o^T (x_o - b_o) / sigma^2
    x_h | x_o ~ N(A_h m + b_h, A_h P^-1 A_h^T)           (-> the exact conditional as sigma -> 0)
"""

from __future__ import annotations

import math

import pytest
import torch

from glow import Glow
from glow.flows import ActNorm, ConditionalActNorm, InvConv1x1LU
from glow.priors import TopPrior
from glow.sampling.diagnostics import effective_sample_size
from glow.sampling.inpaint import inpaint
from glow.sampling.latent import flatten_noise, latent_inpaint_samples, unflatten_noise
from glow.sampling.latent_mala import Schedule, latent_mala


def affine_glow() -> Glow:
    torch.manual_seed(0)
    model = Glow((1, 2, 2), levels=1, steps=2, hidden_channels=8, coupling="additive").double()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # move only the affine parts; the couplings stay the identity
        for m in model.modules():
            if isinstance(m, (ActNorm, InvConv1x1LU, TopPrior)):
                for p in m.parameters(recurse=isinstance(m, TopPrior)):
                    p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            if hasattr(m, "initialized"):
                m.initialized.fill_(True)
        for a in (m for m in model.modules() if isinstance(m, ActNorm)):
            a.log_scale.add_(1.5)  # x = G(eps) has a std and a mean well inside the data box
            a.loc.mul_(0.1)
    return model


def affine_map(model: Glow) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = [tuple(s) for s in model.latent_shapes]
    dims = sum(math.prod(s) for s in shapes)
    with torch.no_grad():
        b = model.decode_noise(unflatten_noise(torch.zeros(1, dims, dtype=torch.float64), shapes)).flatten()
        eye = torch.eye(dims, dtype=torch.float64)
        a = (model.decode_noise(unflatten_noise(eye, shapes)).flatten(1) - b).T
    return a, b


def test_decode_noise_is_affine_and_inverts_encode_noise():
    model = affine_glow()
    a, b = affine_map(model)
    eps = torch.randn(5, 4, dtype=torch.float64)
    x = model.decode_noise(unflatten_noise(eps, [tuple(s) for s in model.latent_shapes]))
    assert torch.allclose(x.flatten(1), eps @ a.T + b, atol=1e-12)
    assert torch.allclose(flatten_noise(model.encode_noise(x)), eps, atol=1e-10)
    assert a.abs().max() < 0.2 and b.abs().max() < 0.2  # the Gaussian sits inside [-0.5, 0.5]


def test_latent_sampler_matches_the_closed_form_gaussian_conditional():
    model = affine_glow()
    a, b = affine_map(model)
    observed, missing, sigma = [0, 3], [1, 2], 0.02
    x_o = b[observed] + torch.tensor([0.05, -0.04], dtype=torch.float64)
    a_o, a_h = a[observed], a[missing]
    precision = torch.eye(4, dtype=torch.float64) + a_o.T @ a_o / sigma ** 2
    cov_eps = torch.linalg.inv(precision)
    mean = a_h @ (cov_eps @ a_o.T @ (x_o - b[observed]) / sigma ** 2) + b[missing]
    cov = a_h @ cov_eps @ a_h.T

    chains = 2000
    x = torch.zeros(chains, 1, 2, 2, dtype=torch.float64)
    x.view(chains, 4)[:, observed] = x_o
    hole = torch.zeros_like(x)
    hole.view(chains, 4)[:, missing] = 1
    gen = torch.Generator().manual_seed(0)
    schedule = Schedule(warmup=5, burn_in=100, sampling=150, sigma=sigma, sigma_start=0.5)
    samples, stats = latent_inpaint_samples(model, x, hole, init="prior", schedule=schedule, generator=gen)
    assert torch.equal(samples.view(chains, 4)[:, observed], x.view(chains, 4)[:, observed])
    xh = samples.view(chains, 4)[:, missing]
    stderr = cov.diagonal().sqrt() / math.sqrt(chains)
    assert ((xh.mean(0) - mean).abs() < 5 * stderr).all(), (xh.mean(0), mean, stderr)
    assert ((xh.var(0) / cov.diagonal() - 1).abs() < 0.15).all(), (xh.var(0), cov.diagonal())
    assert 0.4 < stats["acceptance_rate"] < 0.85
    assert stats["ess_per_chain"] > 10


@pytest.mark.parametrize("target_accept", [0.4, 0.6, 0.8])
def test_adaptive_step_size_reaches_its_target_acceptance_on_a_gaussian(target_accept):
    """A stiff linear-Gaussian target (observed pixels = a random 30x50 map of eps, sigma = 0.01): the
    burn-in's step size and preconditioner adapt; the frozen kernel then accepts close to the target."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(40, 50, generator=gen, dtype=torch.float64) * torch.logspace(-2, 0, 50, dtype=torch.float64)
    x_obs = (a @ torch.randn(50, 1, generator=gen, dtype=torch.float64)).T.expand(200, 40)
    hole = torch.zeros(200, 40, dtype=torch.float64)
    hole[:, 30:] = 1  # 30 observed "pixels", 10 missing
    schedule = Schedule(warmup=20, burn_in=150, sampling=200, sigma=0.01, target_accept=target_accept)
    start = torch.randn(200, 50, generator=gen, dtype=torch.float64)
    _, stats = latent_mala(lambda e: e @ a.T, start, x_obs, 1 - hole, hole, schedule, generator=gen)
    assert abs(stats["acceptance_rate"] - target_accept) < 0.1, stats
    assert stats["ess_per_chain"] > 2.5
    frozen = Schedule(warmup=20, burn_in=0, sampling=200, sigma=0.01)  # no adaptation: the first h is far off
    _, stats = latent_mala(lambda e: e @ a.T, start, x_obs, 1 - hole, hole, frozen, generator=gen)
    assert stats["acceptance_rate"] < 0.05 and stats["ess_per_chain"] < 2


def test_preconditioner_follows_the_curvature_of_the_observed_pixels():
    """Diagonal J: M = 1 / (1 + J^2 / sigma^2) exactly in expectation; the stiff coordinate gets a small M."""
    j = torch.tensor([100.0, 1.0, 0.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    chains = 400
    schedule = Schedule(warmup=0, burn_in=200, sampling=2, sigma=1.0)
    _, stats = latent_mala(lambda e: e * j, torch.zeros(chains, 3, dtype=torch.float64),
                           torch.zeros(chains, 3, dtype=torch.float64), torch.ones(chains, 3, dtype=torch.float64),
                           torch.zeros(chains, 3, dtype=torch.float64), schedule, generator=gen)
    assert stats["preconditioner_min"] == pytest.approx(1 / (1 + 100.0 ** 2), rel=0.45)


def test_inpaint_latent_route_keeps_observed_pixels_and_reports_diagnostics():
    torch.manual_seed(0)
    model = Glow((1, 8, 8), levels=2, steps=2, hidden_channels=8, affine_scale="tanh")
    x = torch.rand(2, 1, 8, 8) - 0.5
    mask = torch.zeros(2, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    result = inpaint(model, x, mask, n=3, steps=14, generator=torch.Generator().manual_seed(0))
    assert result.method == "latent" and result.completions.shape == (2, 3, 1, 8, 8)
    assert torch.equal(result.completions[:, :, :, :2], x[:, None, :, :2].expand(2, 3, 1, 2, 8))
    assert (result.completions[..., 2:6, 2:6].std(1) > 0).any()  # completions differ
    for key in ("acceptance_rate", "ess_per_chain", "lag1_autocorrelation", "obs_rmse"):
        assert key in result.stats


def test_effective_sample_size_of_independent_and_sticky_chains():
    gen = torch.Generator().manual_seed(0)
    iid = torch.randn(400, 50, generator=gen, dtype=torch.float64)
    assert 250 < effective_sample_size(iid)["ess_per_chain"] <= 400
    stuck = effective_sample_size(torch.randn(1, 50, generator=gen).expand(400, 50))  # chains that never move
    assert stuck["ess_per_chain"] == 1.0 and stuck["lag1_autocorrelation"] == 1.0
    ar = torch.zeros(400, 50, dtype=torch.float64)  # AR(1) with rho = 0.9: tau = 19
    for t in range(1, 400):
        ar[t] = 0.9 * ar[t - 1] + math.sqrt(1 - 0.81) * torch.randn(50, generator=gen, dtype=torch.float64)
    tau = effective_sample_size(ar)["tau"]
    assert 12 < tau < 28, tau


def test_conditional_actnorm_needs_its_condition():
    layer = ConditionalActNorm(2, 3)
    try:
        layer(torch.zeros(1, 2, 2, 2))
    except ValueError as err:
        assert "cond" in str(err)
    else:
        raise AssertionError("no error without a condition")
