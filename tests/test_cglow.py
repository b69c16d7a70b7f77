"""c-Glow's own layers: exact inverses and log-determinants equal to the autograd Jacobian in
float64 for every condition, invertibility of the conditional 1x1 conv for ANY network output, and
observed pixels bit-exact through a c-Glow with every part switched on."""

from __future__ import annotations

import math

import pytest
import torch

from glow.conditioning import make_condition
from glow import Glow
from glow.exactness import jacobian_logdet, perturb
from glow.flows import ConditionalActNorm, ConditionalInvConv1x1
from glow.flows.observed import ObservedAsNoise
from glow.masks import make_mask
from glow.quantize import preprocess, to_uint8
from glow.sampling.inpaint import completions_uint8, inpaint


def test_conditional_layers_depend_on_the_condition_and_stay_exact_per_sample():
    gen = torch.Generator().manual_seed(0)
    for layer in (ConditionalActNorm(4, 3), ConditionalInvConv1x1(4, 3)):
        layer = perturb(layer, 0.3).double()
        x = torch.randn(2, 4, 3, 3, dtype=torch.float64, generator=gen)
        cond = torch.randn(2, 3, 3, 3, dtype=torch.float64, generator=gen)
        y, logdet = layer(x, cond)
        assert (logdet[0] - logdet[1]).abs() > 1e-3  # two conditions, two maps
        for i in range(2):  # each sample's logdet is the Jacobian of ITS map
            expected = jacobian_logdet(lambda v: layer(v, cond[i:i + 1])[0], x[i:i + 1])
            assert torch.allclose(logdet[i:i + 1], expected, atol=1e-8, rtol=0)
        assert (layer.inverse(y, cond)[0] - x).abs().max() < 1e-10


def test_conditional_conv_is_invertible_for_any_network_output():
    """20 wild, untrained networks (L(c) and U(c) entries of several units), seeded: W(c) is never
    singular (|det| = exp(sum log_s) > 0) and the layer inverts; the tolerances scale with W(c)'s
    condition number, which such networks push to 1e10 (float64 then loses ~10 digits, legitimately)."""
    gen = torch.Generator().manual_seed(0)
    wild = 0
    for _ in range(20):
        layer = ConditionalInvConv1x1(6, 2).double()
        with torch.no_grad():
            layer.net.linear.weight.copy_(2.0 * torch.randn(layer.net.linear.weight.shape, generator=gen))
            layer.net.linear.bias.copy_(2.0 * torch.randn(layer.net.linear.bias.shape, generator=gen))
        x = torch.randn(3, 6, 2, 2, dtype=torch.float64, generator=gen)
        cond = torch.randn(3, 2, 2, 2, dtype=torch.float64, generator=gen)
        w, log_s = layer.factors(cond)
        tolerance = 1e-12 * torch.linalg.cond(w)  # [B]: what float64 can promise for W(c) and W(c)^-1
        log_det = torch.linalg.slogdet(w)[1] - torch.linalg.slogdet(layer.base.weight())[1]
        assert ((log_det - log_s).abs() <= 1e-10 + tolerance).all()  # never singular: |det| = exp(sum log_s)
        y, logdet = layer(x, cond)
        x_back, logdet_inv = layer.inverse(y, cond)
        assert ((x_back - x).abs().amax(dim=(1, 2, 3)) <= 1e-10 + tolerance * x.abs().amax()).all()
        assert torch.allclose(logdet + logdet_inv, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
        torch.testing.assert_close(logdet, 4 * (layer.base.log_abs_det() + log_s), rtol=0, atol=1e-10)
        wild += int((log_s.abs() > 0.5).sum())
    assert wild > 20  # the networks really moved W(c) far from W0


def test_observed_as_noise_is_exact_and_maps_observed_pixels_to_uniform_noise():
    layer = ObservedAsNoise(2, n_bits=5).double()
    images = torch.randint(0, 32, (3, 2, 4, 4), dtype=torch.uint8)
    hole = make_mask("pixels", 3, (4, 4), generator=torch.Generator().manual_seed(0)).double()
    centres = preprocess(images * 8, 5, dequantize=False).double()
    x = preprocess(images * 8, 5, generator=torch.Generator().manual_seed(1)).double()
    cond = make_condition(centres, hole)
    y, logdet = layer(x, cond)
    observed = (hole == 0).expand_as(x)
    assert (y[observed].abs() <= 0.5).all() and y[observed].std() > 0.2  # the dequantisation noise
    assert torch.equal(y[~observed], x[~observed])
    assert (layer.inverse(y, cond)[0] - x).abs().max() < 1e-12
    expected = jacobian_logdet(lambda v: layer(v, cond[:1])[0], x[:1])
    assert torch.allclose(logdet[:1], expected, atol=1e-8)


def test_gaussian_observed_noise_is_exact_and_standard_normal_on_observed_pixels():
    layer = ObservedAsNoise(1, n_bits=8, distribution="gaussian").double()
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=gen)
    hole = make_mask("pixels", 64, (8, 8), generator=gen).double()
    x = preprocess(images, 8, generator=gen).double()
    cond = make_condition(preprocess(images, 8, dequantize=False).double(), hole)
    y, logdet = layer(x, cond)
    observed = (hole == 0).expand_as(x)
    assert torch.equal(y[~observed], x[~observed])
    noise = y[observed]  # Phi^-1 of uniform noise: standard normal (n ~ 2000: loose moments)
    assert abs(noise.mean()) < 0.1 and abs(noise.std() - 1) < 0.1 and noise.abs().max() < 3.8
    assert (layer.inverse(y, cond)[0] - x).abs().max() < 1e-12
    x_back, logdet_inv = layer.inverse(y, cond)
    assert torch.allclose(logdet + logdet_inv, torch.zeros_like(logdet), atol=1e-9)
    for i in range(2):
        expected = jacobian_logdet(lambda v: layer(v, cond[i:i + 1])[0], x[i:i + 1])
        assert torch.allclose(logdet[i:i + 1], expected, atol=1e-8)
    # float32 still round-trips to well inside the bin (width 1/256)
    y32, _ = layer.float()(x.float(), cond.float())
    assert (layer.inverse(y32, cond.float())[0] - x.float()).abs().max() < 1e-5


def test_gaussian_observed_pixels_cost_nothing_under_a_standard_normal_prior():
    """With the observed pixels standard normal, N(0, 1) on y plus the layer's logdet is the exact density
    of the dequantised observed pixels: uniform on their bins, i.e. n_bits * ln 2 per pixel minus ln(1 - 2 eps)."""
    layer = ObservedAsNoise(1, n_bits=8, distribution="gaussian").double()
    images = torch.randint(0, 256, (4, 1, 4, 4), dtype=torch.uint8)
    hole = torch.zeros(4, 1, 4, 4, dtype=torch.float64)  # everything observed
    x = preprocess(images, 8).double()
    y, logdet = layer(x, make_condition(preprocess(images, 8, dequantize=False).double(), hole))
    log_prior = (-0.5 * (math.log(2 * math.pi) + y ** 2)).flatten(1).sum(1)
    expected = 16 * (8 * math.log(2) + math.log1p(-2e-4))
    assert torch.allclose(log_prior + logdet, torch.full_like(logdet, expected), atol=1e-9)


def test_observed_noise_rejects_unknown_distributions_in_one_line():
    with pytest.raises(ValueError, match="model.observed_noise='beta' is not allowed: use one of none, uniform, gaussian"):
        Glow((1, 8, 8), levels=2, steps=1, hidden_channels=4, conditional="image", observed_noise="beta")


@pytest.mark.parametrize("observed_noise,temperature", [(True, 0.0), ("gaussian", 0.5)])
def test_full_cglow_keeps_observed_pixels_bit_exact(monkeypatch, observed_noise, temperature):
    """With every part of c-Glow on, the MODEL's samples (recorded before the route pastes the input
    back) already hold the observed pixels in their bins: the observed-noise layer maps them there
    (uniform: latents in [-0.5, 0.5), as at T=0; gaussian: any latent within ~3.7 sd). The uint8
    completions are then the input's bits exactly."""
    from glow.sampling import cglow_route

    torch.manual_seed(0)
    model = perturb(Glow((1, 8, 8), levels=2, steps=2, hidden_channels=8, conditional="image", cond_channels=4,
                         cond_encoder="unet", conditional_layers=True, observed_noise=observed_noise), 0.05)
    images = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    mask = make_mask("center", 2, (8, 8))
    raw, paste = [], cglow_route.as_result
    monkeypatch.setattr(cglow_route, "as_result", lambda filled, *a, **k: (raw.append(filled), paste(filled, *a, **k))[1])
    result = inpaint(model, preprocess(images, 8, dequantize=False), mask, n=3, method="cglow", temperature=temperature)
    sampled = to_uint8(raw[0], 8).view(2, 3, 1, 8, 8)
    filled = completions_uint8(result, images, mask, 8)
    keep = (mask == 0).expand_as(images.float()).unsqueeze(1).expand_as(filled)
    expected = images.unsqueeze(1).expand_as(filled)
    assert (sampled[keep] == expected[keep]).float().mean() >= 0.99  # the model, before any paste-back
    assert (sampled[keep].int() - expected[keep].int()).abs().max() <= 1
    assert torch.equal(filled[keep], expected[keep])  # and after it, bit-exact
    assert torch.equal(filled[~keep], sampled[~keep]) and filled[~keep].float().std() > 0


def _mixture_cglow(hypotheses: int = 2) -> Glow:
    torch.manual_seed(0)
    return perturb(Glow((1, 4, 4), levels=2, steps=1, hidden_channels=4, conditional="image", cond_channels=4,
                        cond_encoder="unet", conditional_layers=True, observed_noise="gaussian", hole_predictor=True,
                        hole_hypotheses=hypotheses, hole_features=True), 0.3).double().eval()


def test_hole_mixture_log_prob_is_the_exact_mixture_of_its_components_by_brute_force():
    """log p(x | c) = log sum_k pi_k p_k(x | c), each p_k written out as N(eps_k(x); 0, I) |det d eps_k / dx|
    with eps_k the standardised latents of component k and the Jacobian by autograd in float64."""
    model = _mixture_cglow()
    images = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    hole = make_mask("center", 2, (4, 4))
    x = preprocess(images, 8, generator=torch.Generator().manual_seed(2)).double()
    cond = make_condition(preprocess(images, 8, dequantize=False).double(), hole.double())
    mu, log_weights = model.hole_predictor(cond)
    assert (mu[:, 0] - mu[:, 1]).abs().max() > 1e-3 and (log_weights.exp() - 0.5).abs().max() > 1e-3

    def standardised(v: torch.Tensor, i: int, k: int) -> torch.Tensor:
        priors: list = []
        zs, _, _ = model._encode(v, cond[i:i + 1], priors, component=torch.tensor([k]))
        return torch.cat([((z - m) / torch.exp(s)).flatten(1) for z, (m, s) in zip(zs, priors)], 1)

    expected = []
    for i in range(2):
        parts = []
        for k in range(2):
            eps = standardised(x[i:i + 1], i, k)
            log_normal = (-0.5 * eps ** 2 - 0.5 * math.log(2 * math.pi)).sum()
            parts.append(log_weights[i, k] + log_normal + jacobian_logdet(lambda v: standardised(v, i, k), x[i:i + 1])[0])
        expected.append(torch.logsumexp(torch.stack(parts), 0))
    with torch.no_grad():
        assert torch.allclose(model.log_prob(x, cond), torch.stack(expected), atol=1e-8, rtol=0)
        bound, hypotheses, winner = model.log_prob_and_hole_prediction(x, cond)
        assert (bound <= model.log_prob(x, cond) + 1e-10).all() and hypotheses.shape == (2, 2, 1, 4, 4)
        zs, _ = model.encode(x, cond)
        assert (model.decode(zs, cond) - x).abs().max() < 1e-10  # the most likely component's bijection


def test_hole_mixture_samples_components_by_their_weights_and_regresses_winner_takes_all():
    from glow.hole_predictor import RELAX, hole_errors, regression_loss

    model = _mixture_cglow(3)
    cond = make_condition(torch.zeros(1, 1, 4, 4, dtype=torch.float64), make_mask("center", 1, (4, 4)).double())
    weights = model.hole_predictor(cond)[1].exp()[0]
    draws = model.sample_components(cond.expand(20000, -1, -1, -1), torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=3).double() / 20000
    assert (frequencies - weights).abs().max() < 0.02, (frequencies, weights)
    stratified = model.sample_components(cond.expand(20000, -1, -1, -1), torch.Generator().manual_seed(1), group=8)
    for j in (0, 5):  # each completion of a group is still drawn by the weights ...
        share = torch.bincount(stratified.view(-1, 8)[:, j], minlength=3).double() / 2500
        assert (share - weights).abs().max() < 0.04, (share, weights)
    counts = torch.stack([torch.bincount(g, minlength=3) for g in stratified.view(-1, 8)]).double()
    assert ((counts - 8 * weights).abs() < 1 + 1e-9).all()  # ... and a group holds each within one of its share
    mu = torch.tensor([0.0, 0.1, 0.3], dtype=torch.float64).view(1, 3, 1, 1, 1).expand(1, 3, 1, 2, 2)
    x, hole = torch.full((1, 1, 2, 2), 0.12, dtype=torch.float64), torch.ones(1, 1, 2, 2)
    errors = hole_errors(mu, x, hole)[0]
    assert torch.allclose(errors, torch.tensor([0.0144, 0.0004, 0.0324], dtype=torch.float64))
    loss = regression_loss(mu, x, hole, errors.argmin().view(1))
    assert loss.item() == pytest.approx((1 - RELAX) * 0.0004 + RELAX * (0.0144 + 0.0324) / 2)
