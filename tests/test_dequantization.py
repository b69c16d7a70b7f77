"""Variational dequantisation (glow.dequantization): q(u | x) is a correct density, it starts uniform,
its bound is never below the exact discrete likelihood, and the uniform path is today's, exactly."""

from __future__ import annotations

import math

import pytest
import torch

import glow
from glow.density import ModelInputs
from glow.dequantization import VariationalDequantizer
from glow.exactness import perturb
from glow.module import DensityModule
from glow.quantize import bits_per_dim, preprocess, reduce_bits

TINY = {"levels": 2, "steps": 1, "hidden_channels": 4, "image_shape": [1, 4, 4]}


def images(n=3, seed=0, shape=(1, 4, 4)):
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_uniform_dequantisation_is_todays_figure_exactly():
    module = DensityModule(TINY)
    batch = (images(), torch.zeros(3, dtype=torch.long))
    inputs = module.model_inputs(batch, torch.Generator().manual_seed(5))
    assert torch.equal(inputs.x, preprocess(batch[0], 8, generator=torch.Generator().manual_seed(5)))
    log_prob = module.model.log_prob(inputs.x)
    assert torch.equal(inputs.bound(log_prob), log_prob)


def test_q_starts_as_the_uniform_distribution_with_log_q_zero():
    q = VariationalDequantizer((1, 4, 4))
    x = images(512)
    y, log_q = q(x, 8, torch.Generator().manual_seed(0))
    assert torch.equal(log_q, torch.zeros_like(log_q))
    u = (y + 0.5) * 256 - reduce_bits(x, 8)  # the noise inside each bin
    assert (u >= 0).all() and (u < 1).all()
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005  # U[0, 1): 1/2, 1/12


def test_log_q_is_the_change_of_variables_of_the_sampled_noise():
    """log q(u | x) against brute force in float64: log N(eps) - log|det du/deps| of the autograd Jacobian."""
    torch.manual_seed(0)
    q = perturb(VariationalDequantizer((1, 4, 4), hidden_channels=4, feature_channels=4), 0.3).double()
    x = images(2)
    eps = torch.randn((2, 1, 4, 4), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y, log_q = q(x, 8, torch.Generator().manual_seed(3))
    features = q.features((reduce_bits(x, 8).double() + 0.5) / 256 - 0.5)
    for i in range(2):
        def noise_map(e, i=i):
            v, _ = q.flow(e.view(1, 1, 4, 4), features[i:i + 1])
            return torch.special.ndtr(v).flatten()
        jacobian = torch.autograd.functional.jacobian(noise_map, eps[i].flatten())
        log_n = torch.distributions.Normal(0.0, 1.0).log_prob(eps[i]).sum().double()
        expected = log_n - torch.linalg.slogdet(jacobian)[1]
        assert torch.allclose(log_q[i], expected, atol=1e-8), (log_q[i], expected)
        u = (y[i].flatten() + 0.5) * 256 - reduce_bits(x[i], 8).flatten().double()
        assert torch.allclose(u, noise_map(eps[i].flatten()), atol=1e-9)
    assert log_q.abs().max() > 0.1  # a perturbed q is not uniform: the check above could fail


def test_the_bound_is_never_below_the_exact_discrete_nll():
    """A factorised Gaussian density p, whose bin probabilities are exact from its CDF in float64: the
    variational bound -E_q[log p(y) - log q(u|x)] + D log 2^n, averaged over many draws of a perturbed q,
    lies above -log P(x), by the KL between q and p's own noise distribution."""
    torch.manual_seed(0)
    n_bits, mean, std = 2, 0.1, 0.3
    q = perturb(VariationalDequantizer((1, 2, 2), hidden_channels=4, feature_channels=4), 0.5).double()
    x = (torch.tensor([0, 1, 2, 3], dtype=torch.uint8) * 64).view(1, 1, 2, 2)
    bins = reduce_bits(x, n_bits).double().flatten()
    normal = torch.distributions.Normal(torch.tensor(mean, dtype=torch.float64), std)
    low, high = bins / 4 - 0.5, (bins + 1) / 4 - 0.5
    exact_nll = -torch.log(normal.cdf(high) - normal.cdf(low)).sum()  # nats, the discrete likelihood
    y, log_q = q(x.expand(20000, 1, 2, 2), n_bits, torch.Generator().manual_seed(1))
    log_p = normal.log_prob(y.flatten(1)).sum(1)
    bound = -(log_p - log_q) + 4 * n_bits * math.log(2)
    error = 4 * bound.std() / math.sqrt(bound.numel())
    assert bound.mean() >= exact_nll - error, (bound.mean(), exact_nll)
    uniform = -normal.log_prob(preprocess(x.expand(20000, 1, 2, 2), n_bits).double().flatten(1)).sum(1) \
        + 4 * n_bits * math.log(2)
    assert uniform.mean() >= exact_nll - 4 * uniform.std() / math.sqrt(uniform.numel())


def test_module_bits_per_dim_include_minus_log_q():
    module = DensityModule(TINY, dequantization="variational")
    perturb(module.dequantizer, 0.3)
    batch = (images(), torch.zeros(3, dtype=torch.long))
    inputs = module.model_inputs(batch, torch.Generator().manual_seed(1))
    figures = module.model.evaluate(inputs)
    log_prob = module.model.log_prob(inputs.x)
    expected = bits_per_dim(log_prob - inputs._log_q, 16, 8)
    assert torch.allclose(figures["bpd"], expected) and not torch.allclose(figures["bpd"], bits_per_dim(log_prob, 16, 8))
    loss, _ = module.model.objective(inputs, module.objective_terms())
    assert torch.isclose(loss, expected.mean().float())
    assert any(p is module.dequantizer.flow.layers[0].net.out.conv.weight
               for group in module.configure_optimizers()["optimizer"].param_groups for p in group["params"])


def test_variational_needs_a_model_that_takes_it():
    with pytest.raises(ValueError, match="module.dequantization='variational' is not allowed: this model takes uniform"):
        DensityModule({**TINY, "conditional": "image", "cond_channels": 4}, dequantization="variational")
    with pytest.raises(ValueError, match="module.dequantization='beta' is not allowed"):
        DensityModule(TINY, dequantization="beta")
