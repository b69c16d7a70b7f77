"""The whole Glow: exact encode/decode, logdet vs autograd, normalised density, ActNorm init, precision."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from glow.conditioning import make_condition
from glow import Glow
from glow.flows.actnorm import ActNorm
from glow.flows.nets import CouplingNet, ZeroBias, ZeroConv2d, ZeroLinear
from glow.model_args import PERMUTATIONS
from glow.flows.coupling import COUPLINGS
from tests.helpers import jacobian_logdet, perturb

COMBOS = list(itertools.product(COUPLINGS, PERMUTATIONS))


def small(coupling="affine", permutation="conv_lu", shape=(2, 8, 8), **kw):
    torch.manual_seed(0)
    kw = dict(dict(levels=2, steps=2, hidden_channels=16, spline_bins=4), **kw)
    return Glow(shape, coupling=coupling, permutation=permutation, **kw)


def flat(zs):
    return torch.cat([z.reshape(z.shape[0], -1) for z in zs], dim=1)


@pytest.mark.parametrize("coupling,permutation", COMBOS)
def test_model_round_trip(coupling, permutation):
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        model = perturb(small(coupling, permutation)).to(dtype)
        x = torch.rand(4, 2, 8, 8, dtype=dtype) - 0.5
        zs, logdet = model.encode(x)
        assert [tuple(z.shape[1:]) for z in zs] == model.latent_shapes
        assert logdet.dtype == dtype and logdet.shape == (4,)
        assert (flat(zs) - flat(model.encode(torch.zeros_like(x))[0])).abs().max() > 1e-2
        assert (model.decode(zs) - x).abs().max() <= tol, (coupling, permutation, dtype)


@pytest.mark.parametrize("coupling,permutation", COMBOS)
def test_model_logdet_matches_autograd_jacobian(coupling, permutation):
    model = perturb(Glow((1, 4, 4), levels=2, steps=2, hidden_channels=8, coupling=coupling,
                         permutation=permutation, spline_bins=4)).double()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64) - 0.5
    expected = jacobian_logdet(lambda v: flat(model.encode(v)[0]), x)
    _, logdet = model.encode(x)
    assert torch.allclose(logdet, expected, atol=1e-8, rtol=0)


@pytest.mark.parametrize("preset", [
    dict(coupling="additive", permutation="reverse", actnorm=False, learn_top=False, final_scaling=True),  # NICE
    dict(coupling="affine", permutation="reverse", mask="checkerboard"),  # RealNVP
    dict(conditional="class", num_classes=3),
    dict(conditional="image", cond_channels=4),
    dict(conditional="image", cond_channels=4, cond_encoder="unet", conditional_layers=True),  # c-Glow
    dict(conditional="image", cond_channels=4, cond_encoder="unet", conditional_layers=True, observed_noise=True),
    dict(conditional="image", cond_channels=4, cond_encoder="unet", observed_noise="gaussian", hole_predictor=True),
    dict(affine_scale="tanh"),  # the two-sided bounded affine scale (not Glow)
    dict(affine_scale="tanh", pixel_actnorm=True, mask="checkerboard"),
])
def test_presets_and_conditional_models_are_exact(preset):
    model = perturb(Glow((1, 4, 4), levels=2, steps=2, hidden_channels=8, **preset)).double()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64) - 0.5
    cond = None
    if preset.get("conditional") == "class":
        cond = torch.tensor([0, 2])
    elif preset.get("conditional") == "image":
        mask = (torch.rand(2, 1, 4, 4) < 0.5).double()
        observed = torch.rand(2, 1, 4, 4, dtype=torch.float64)
        if preset.get("observed_noise") == "gaussian":  # its domain: x in the bin of its observed value
            observed = (torch.floor((x + 0.5) * 256) + 0.5) / 256 - 0.5
        cond = make_condition(observed, mask)
    zs, logdet = model.encode(x, cond)
    assert (model.decode(zs, cond) - x).abs().max() <= 1e-10
    expected = jacobian_logdet(lambda v: flat(model.encode(v, cond[:1] if cond is not None else None)[0]), x[:1])
    assert torch.allclose(logdet[:1], expected, atol=1e-8, rtol=0)
    if cond is not None:  # the condition really changes the density
        other = cond.flip(0)
        assert (model.log_prob(x, cond) - model.log_prob(x, other)).abs().max() > 1e-4


def test_log_prob_is_prior_plus_logdet_with_standard_normal_prior():
    model = perturb(Glow((1, 4, 4), levels=1, steps=2, hidden_channels=8, learn_top=False)).double()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64) - 0.5
    zs, logdet = model.encode(x)
    z = flat(zs)
    standard_normal = -0.5 * (z ** 2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
    assert torch.allclose(model.log_prob(x), standard_normal + logdet, atol=1e-10)


@pytest.mark.parametrize("coupling", [*COUPLINGS, "affine_tanh"])
def test_density_normalises(coupling):
    """Importance sampling of the integral of p over R^4 (a 1x2x2 image) with a wide Gaussian proposal."""
    torch.manual_seed(1)
    scale = "tanh" if coupling == "affine_tanh" else "sigmoid"
    model = perturb(Glow((1, 2, 2), levels=1, steps=3, hidden_channels=8, coupling=coupling.replace("_tanh", ""),
                         permutation="conv", spline_bins=4, affine_scale=scale), scale=0.1, seed=3).double()
    n, sigma = 400_000, 1.5
    q = torch.distributions.Normal(torch.zeros(4, dtype=torch.float64), sigma * torch.ones(4, dtype=torch.float64))
    y = q.sample((n,))
    with torch.no_grad():
        log_w = model.log_prob(y.view(n, 1, 2, 2)) - q.log_prob(y).sum(1)
    w = log_w.exp()
    estimate, stderr = w.mean().item(), (w.std() / math.sqrt(n)).item()
    assert stderr < 0.01, f"proposal too poor to test anything (stderr {stderr})"
    assert abs(estimate - 1) < 5 * stderr + 1e-3, (estimate, stderr)
    # and the test can fail: dropping the logdet term breaks the normalisation
    _, logdet = model.encode(y.view(n, 1, 2, 2))
    assert abs((log_w - logdet).exp().mean().item() - 1) > 20 * stderr


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_density_with_a_split_prior_normalises(coupling):
    """levels=2, so the split prior's density p(z_1 | h_1) is in the integral: importance sampling over
    R^16 (a 1x4x4 image) with a Gaussian proposal fitted to the model's own samples. (The exact check,
    log_prob against the Jacobian of the sampler, is in tests/test_core_density.py.)"""
    torch.manual_seed(2)
    model = perturb(Glow((1, 4, 4), levels=2, steps=1, hidden_channels=4, coupling=coupling, spline_bins=4,
                         affine_scale="tanh"), scale=0.05, seed=3).double()
    n = 40_000
    with torch.no_grad():
        draws = model.sample(2000, 1.0).view(2000, 16)
        q = torch.distributions.MultivariateNormal(draws.mean(0), 1.2 ** 2 * torch.cov(draws.T))
        y = q.sample((n,))
        log_w = model.log_prob(y.view(n, 1, 4, 4)) - q.log_prob(y)
        priors = []
        zs, _, _ = model._encode(y.view(n, 1, 4, 4), None, priors)
    w = log_w.exp()
    estimate, stderr = w.mean().item(), (w.std() / math.sqrt(n)).item()
    assert stderr < 0.02, f"proposal too poor to test anything (stderr {stderr})"
    assert abs(estimate - 1) < 5 * stderr + 2e-3, (estimate, stderr)
    # and the test can fail: without the split prior's term the integral is far from one
    mean, log_std = priors[0]
    split_term = torch.distributions.Normal(mean, log_std.exp()).log_prob(zs[0]).flatten(1).sum(1)
    assert abs((log_w - split_term).exp().mean().item() - 1) > 20 * stderr


def test_sample_shapes_temperature_zero_and_any_n():
    model = perturb(small())
    for n in (1, 7):
        assert model.sample(n, temperature=0.7).shape == (n, 2, 8, 8)
    a, b = model.sample(3, temperature=0.0), model.sample(3, temperature=0.0)
    assert torch.equal(a, b)  # T=0: the prior means, whatever the noise


@pytest.mark.parametrize("temperature", [0.3, 0.6, 1.0])
def test_sample_is_decode_of_prior_draws_with_std_times_t(temperature):
    """Re-encoding a sample gives back latents consistent with the noise: z_top = mean + T * std * noise
    with the top prior's own mean and std (not std^2, not T^2), and every latent standardised by its
    prior is T * noise (the split priors' too)."""
    model = perturb(small()).double()
    torch.manual_seed(0)
    noise = [torch.randn(3, *s, dtype=torch.float64) for s in model.latent_shapes]
    x = model.sample(3, temperature=temperature, noise=noise)
    zs, _ = model.encode(x)
    mean, log_std = model.top_prior.params(3)
    assert log_std.abs().max() > 1e-3  # the prior's std is not 1, so std vs std^2 shows
    assert torch.allclose(zs[-1], mean + temperature * log_std.exp() * noise[-1], atol=1e-8)
    for standardised, e in zip(model.encode_noise(x), noise):
        assert torch.allclose(standardised, temperature * e, atol=1e-8)


def test_initialize_normalises_actnorm_outputs_and_is_a_no_op_after():
    model = small(shape=(1, 8, 8))
    x = torch.rand(64, 1, 8, 8) * 0.5 + 0.1
    outputs = []
    actnorms = [m for m in model.modules() if isinstance(m, ActNorm)]
    inner = [m for m in actnorms if any(m is n for c in model.modules() if isinstance(c, CouplingNet)
                                        for n in c.modules())]
    assert len(actnorms) == 12 and len(inner) == 8  # 4 flow steps, each with 2 inside its coupling net
    assert all(not bool(m.initialized) for m in actnorms)
    hooks = [m.register_forward_hook(lambda mod, inp, out: outputs.append(out[0])) for m in actnorms]
    assert model.initialize(x) is True
    for h in hooks:
        h.remove()
    assert len(outputs) == 12  # every ActNorm, the coupling nets' own included, saw the init batch
    for out in outputs:
        assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-3
        assert (out.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-2
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.initialize(x * 3) is False
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model.is_initialized


def test_precision_under_autocast():
    """Under bf16 autocast the coupling nets run in bf16 but logdets, priors and W^-1 stay float32."""
    model = perturb(small(), scale=0.05)
    x = torch.rand(4, 2, 8, 8) - 0.5
    reference = model.log_prob(x)
    net_dtypes = []  # what the coupling networks' first hidden layer computed in: the proof that bf16 ran
    first_layer = model.levels[0].layers[2].net.hidden[0]  # conv (+ folded ActNorm) + ReLU
    first_layer.register_forward_hook(lambda module, inputs, output: net_dtypes.append(output.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        zs, logdet = model.encode(x)
        log_p = model.log_prob(x)
        x_rec = model.decode(zs)
        conv = model.levels[0].layers[1]
        _, conv_logdet = conv(torch.randn(2, 8, 4, 4))
        mean, log_std = model.top_prior.params(2)
    assert net_dtypes and set(net_dtypes) == {torch.bfloat16}
    assert logdet.dtype == log_p.dtype == conv_logdet.dtype == torch.float32
    assert mean.dtype == log_std.dtype == torch.float32
    assert all(z.dtype == torch.float32 for z in zs)
    assert (x_rec - x).abs().max() < 1e-4  # same bf16 params both ways: still an exact inverse
    assert ((log_p - reference).abs() / reference.abs()).max() < 0.02


@pytest.mark.parametrize("kwargs,message", [
    (dict(coupling="bogus"), "model.coupling='bogus' is not allowed"),
    (dict(permutation="bogus"), "model.permutation='bogus' is not allowed"),
    (dict(steps=0), "model.steps=0 is not allowed"),
    (dict(levels=4), "data.image_size=8 is not allowed with model.levels=4"),
])
def test_bad_arguments_give_one_line_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        small(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


# -- openai/glow's parameterisation: zero layers with exp(3 * logs), per-channel learned top ------------
def test_zero_layers_output_exactly_zero_at_init():
    torch.manual_seed(0)
    conv, linear, bias = ZeroConv2d(5, 6), ZeroLinear(4, 6), ZeroBias(6)
    assert torch.equal(conv(torch.randn(3, 5, 4, 4)), torch.zeros(3, 6, 4, 4))
    assert torch.equal(linear(torch.randn(3, 4)), torch.zeros(3, 6))
    assert torch.equal(bias(), torch.zeros(1, 6, 1, 1))
    with torch.no_grad():  # the output scale is exp(3 * logs): logs = ln(2)/3 doubles the output
        conv.conv.bias.fill_(1.0)
        conv.logs.fill_(math.log(2.0) / 3)
    assert torch.allclose(conv(torch.zeros(1, 5, 2, 2)), torch.full((1, 6, 2, 2), 2.0))


def test_folded_weights_no_grad_cache_follows_every_change():
    """Where no gradient is wanted the folded weights are cached (glow.flows.cache): the
    cache must never outlive an optimiser step, load_state_dict, an in-place edit or a dtype change."""
    torch.manual_seed(0)
    net = CouplingNet(3, 4, 8)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, 3, 4, 4)

    def fresh():  # the network with every cache bypassed: grad enabled, then detached
        with torch.enable_grad():
            return net(x).detach()

    with torch.no_grad():
        first = net(x)
        assert net.hidden[0].folded()[0] is net.hidden[0].folded()[0]  # cached
        assert torch.equal(first, fresh())
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    net(x).square().sum().backward()
    optimizer.step()
    with torch.no_grad():
        assert not torch.allclose(net(x), first) and torch.allclose(net(x), fresh())
    other = CouplingNet(3, 4, 8)
    with torch.no_grad():
        for p in other.parameters():
            p.normal_(0, 0.3)
    net.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.allclose(net(x), other(x))
        net.hidden[0].norm.log_scale.add_(0.5)
        assert torch.allclose(net(x), fresh())
    net.double()
    with torch.no_grad():
        out = net(x.double())
    assert out.dtype == torch.float64 and torch.allclose(out, net(x.double()).detach())
    assert net.hidden[0].folded()[0].requires_grad  # grad enabled: the folded weight with its graph


def _train_a_few_steps(model, steps=5):
    torch.manual_seed(1)
    x = torch.rand(16, 2, 8, 8) - 0.5
    model.initialize(x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        (-model.log_prob(x).mean()).backward()
        opt.step()


def test_every_zero_layer_logs_is_trained():
    model = small()
    zero_layers = [m for m in model.modules() if isinstance(m, (ZeroConv2d, ZeroLinear, ZeroBias))]
    # 4 coupling nets + 1 split prior + the learned top
    assert len(zero_layers) == 6 and all(torch.equal(m.logs, torch.zeros_like(m.logs)) for m in zero_layers)
    _train_a_few_steps(model)
    assert all(m.logs.abs().max() > 1e-4 for m in zero_layers)


def test_zero_logscale_ablation_freezes_logs():
    model = small(zero_logscale=False)
    _train_a_few_steps(model)
    logs = [m.logs for m in model.modules() if isinstance(m, (ZeroConv2d, ZeroLinear, ZeroBias))]
    assert logs and all(torch.equal(t, torch.zeros_like(t)) for t in logs)


@pytest.mark.parametrize("per_position", [False, True])
def test_top_prior_is_per_channel(per_position):
    model = small(learn_top_per_position=per_position)
    _train_a_few_steps(model)
    mean, log_std = model.top_prior.params(2)
    assert mean.shape == (2, 16, 2, 2)
    spread = (mean - mean[..., :1, :1]).abs().amax() + (log_std - log_std[..., :1, :1]).abs().amax()
    assert log_std.abs().max() > 1e-4  # it was trained
    if per_position:  # the ablation really varies over positions, so the check above can fail
        assert spread > 1e-5
    else:
        assert spread == 0


def test_inner_actnorm_ablation_has_biased_hidden_convs():
    model = small(inner_actnorm=False)
    nets = [m for m in model.modules() if isinstance(m, CouplingNet)]
    assert nets and not any(isinstance(m, ActNorm) for n in nets for m in n.modules())
    assert all(layer.conv.bias is not None for n in nets for layer in n.hidden)
