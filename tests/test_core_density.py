"""The density and the sampler against brute force: priors against torch.distributions, temperature
as an exact power of T, the density of a multi-level Glow (split priors included) as the pushforward of
its standard-normal draws (float64 autograd Jacobian), and dequantisation and bits/dim against formulas
written out here. Small, seeded and fast: these are the tests a one-line bug in the core must fail."""

from __future__ import annotations

import math

import pytest
import torch

from glow import Glow
from glow.conditioning import make_condition
from glow.density import ModelInputs, ObjectiveTerms
from glow.exactness import condition_for, jacobian_logdet, layer_factories, perturb
from glow.families import build_model
from glow.flows.squeeze import Squeeze
from glow.masks import make_mask
from glow.priors import gaussian_log_prob, gaussian_sample
from glow.quantize import bits_per_dim, preprocess, reduce_bits, to_uint8
from glow.sampling.inpaint import inpaint

LN2 = math.log(2.0)


def flat(zs):
    return torch.cat([z.reshape(z.shape[0], -1) for z in zs], dim=1)


def unflat(v, shapes):
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(v[:, start:start + size].reshape(v.shape[0], *shape))
        start += size
    return out


def glow64(shape=(1, 8, 8), levels=3, seed=0, scale=0.1, **kw):
    torch.manual_seed(seed)
    kw = dict(dict(steps=2, hidden_channels=8, spline_bins=4, affine_scale="tanh"), **kw)
    return perturb(Glow(shape, levels=levels, **kw), scale=scale, seed=seed + 1).double()


# -- the Gaussian prior -------------------------------------------------------------------------------
def test_gaussian_log_prob_is_the_normal_density():
    gen = torch.Generator().manual_seed(0)
    z, mean = (torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    log_std = 0.7 * torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_log_prob(z, mean, log_std), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("temperature", [0.0, 0.4, 1.0, 2.5])
def test_gaussian_sample_is_the_mean_plus_t_times_the_std(temperature):
    gen = torch.Generator().manual_seed(1)
    mean, noise = (torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    log_std = 0.7 * torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64)
    std = torch.sqrt(torch.exp(2 * log_std))  # written another way than the code's
    torch.testing.assert_close(gaussian_sample(mean, log_std, temperature, noise), mean + temperature * std * noise,
                               rtol=0, atol=1e-12)


# -- temperature: every prior's std times T, exactly ----------------------------------------------------
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_glow_latents_scale_exactly_with_temperature(temperature):
    """Samples at T from fixed noise: each latent, standardised by its prior, is T * noise (not T^2,
    not sqrt(T)); the top latent is mean + T * std * noise with the prior's own parameters; and a
    sample at T is the sample at T=1 of the noise times T."""
    model = glow64(conditional="class", num_classes=3)
    labels = torch.tensor([0, 2, 1])
    gen = torch.Generator().manual_seed(2)
    noise = [torch.randn(3, *s, generator=gen, dtype=torch.float64) for s in model.latent_shapes]
    x = model.sample(3, temperature=temperature, cond=labels, noise=noise)
    for standardised, e in zip(model.encode_noise(x, labels, temperature=1.0), noise):
        torch.testing.assert_close(standardised, temperature * e, rtol=0, atol=1e-8)
    for standardised, e in zip(model.encode_noise(x, labels, temperature=temperature), noise):
        torch.testing.assert_close(standardised, e, rtol=0, atol=1e-8)
    mean, log_std = model.top_prior.params(3, labels)
    assert log_std.abs().max() > 1e-3 and mean.abs().max() > 1e-3  # a prior that is not N(0, I)
    zs, _ = model.encode(x, labels)
    torch.testing.assert_close(zs[-1], mean + temperature * log_std.exp() * noise[-1], rtol=0, atol=1e-8)
    scaled = model.sample(3, temperature=1.0, cond=labels, noise=[temperature * e for e in noise])
    torch.testing.assert_close(x, scaled, rtol=0, atol=1e-10)


def test_temperature_zero_is_the_mode_of_every_prior():
    model = glow64()
    noise = [torch.randn(2, *s, dtype=torch.float64) for s in model.latent_shapes]
    x = model.sample(2, temperature=0.0, noise=noise)
    assert torch.equal(x, model.sample(2, temperature=0.0, noise=[3 * e for e in noise]))
    for standardised in model.encode_noise(x):
        assert standardised.abs().max() < 1e-8


@pytest.mark.parametrize("method", ["latent", "cglow"])
def test_an_inpainting_route_at_t0_draws_one_completion(method):
    """Temperature reaches the sampler of each route that draws from the priors: at T=0 every prior is
    its mode, so the n completions of an image are one and the same; at T=1 they differ."""
    torch.manual_seed(0)
    model = perturb(Glow((1, 8, 8), levels=2, steps=2, hidden_channels=8, affine_scale="tanh",
                         conditional="image" if method == "cglow" else None, cond_channels=4), 0.05).eval()
    x = preprocess(torch.randint(0, 256, (1, 1, 8, 8), dtype=torch.uint8), 8, dequantize=False)
    mask = make_mask("center", 1, (8, 8))
    hole = mask.bool().expand(1, 1, 8, 8)
    for temperature in (0.0, 1.0):
        result = inpaint(model, x, mask, n=3, method=method, temperature=temperature, steps=6,
                         generator=torch.Generator().manual_seed(1))
        fills = result.completions[0, :, hole[0]]
        spread = (fills - fills[:1]).abs().max().item()
        assert (spread == 0) if temperature == 0 else (spread > 1e-3), (temperature, spread)


FAMILIES = {
    "maf": {"family": "maf", "image_shape": [1, 4, 4], "num_layers": 2, "hidden": 8},
    "iaf": {"family": "iaf", "image_shape": [1, 4, 4], "num_layers": 2, "hidden": 8},
    "vae": {"family": "vae", "image_shape": [1, 8, 8], "latent_dim": 3, "hidden": 8, "flow_length": 1,
            "posterior": "planar"},
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_other_families_scale_their_draws_by_t(family):
    torch.manual_seed(0)
    model = perturb(build_model(FAMILIES[family]), 0.1).double()
    dims = model.latent_shapes[0]
    noise = torch.randn(4, *dims, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for temperature in (0.5, 2.0):
        x = model.sample(4, temperature=temperature, noise=[noise])
        torch.testing.assert_close(x, model.sample(4, temperature=1.0, noise=[temperature * noise]), rtol=0, atol=1e-10)
        if family != "vae":  # an exact latent code: the draw comes back, times T
            torch.testing.assert_close(model.encode(x)[0][0], temperature * noise.view(4, -1), rtol=0, atol=1e-8)


# -- logdets on inputs whose channels, height and width all differ ---------------------------------------
NON_SQUARE = layer_factories(6, 2, 4)


@pytest.mark.parametrize("name", list(NON_SQUARE))
def test_logdet_matches_the_jacobian_on_a_non_square_input(name):
    """C=6, H=2, W=4: a logdet that counts H*H pixels, or sums over the wrong dimensions, shows here
    (tests/test_flows.py's 4x4x4 input cannot tell H from W from C)."""
    layer = perturb(NON_SQUARE[name](), 0.1, seed=1).double()
    x = torch.randn(1, 6, 2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    cond = condition_for(layer, x)
    _, logdet = layer(x, cond)
    expected = jacobian_logdet(lambda v: layer(v, cond)[0], x)
    torch.testing.assert_close(logdet, expected, rtol=0, atol=1e-8)
    x_back, logdet_inv = layer.inverse(layer(x, cond)[0], cond)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(logdet_inv, -logdet, rtol=0, atol=1e-10)


# -- the density of a multi-level Glow is the pushforward of its draws ------------------------------------
PRESETS = {
    "affine-levels3": dict(levels=3, coupling="affine"),
    "additive-levels3": dict(levels=3, coupling="additive", permutation="reverse"),
    "spline-levels2": dict(levels=2, coupling="spline", shape=(1, 4, 4), permutation="shuffle"),
    "sigmoid-levels2-conv": dict(levels=2, coupling="affine", affine_scale="sigmoid", permutation="conv",
                                 shape=(2, 4, 4), mask="checkerboard"),
    "class-levels3": dict(levels=3, conditional="class", num_classes=3),
    "image-levels2": dict(levels=2, shape=(1, 4, 4), conditional="image", cond_channels=4,
                          cond_encoder="unet", conditional_layers=True, observed_noise="gaussian"),
    "pixel_actnorm-final_scaling": dict(levels=2, shape=(1, 4, 4), pixel_actnorm=True, final_scaling=True),
    "non-square-levels2": dict(levels=2, shape=(3, 4, 8), steps=1, permutation="conv"),
}


def _condition(preset, batch: int, shape):
    if preset.get("conditional") == "class":
        return torch.tensor([1, 2])
    if preset.get("conditional") == "image":  # the observed pixels' bin centres and the hole
        images = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
        hole = make_mask("center", batch, shape[-2:]).double()
        return make_condition(preprocess(images, 8, dequantize=False).double(), hole)
    return None


@pytest.mark.parametrize("name", list(PRESETS))
def test_log_prob_is_the_density_of_the_sampler(name):
    """x = G(eps) with eps ~ N(0, I) (decode_noise at T=1) has the density
    log N(eps; 0, I) - log|det dG/deps| (change of variables, Jacobian by autograd in float64). Every
    split prior's density, the top prior's and every logdet must be in log_prob for this to hold; and
    since N(0, I) integrates to one, so does the model: an exact normalisation check."""
    preset = dict(PRESETS[name])
    shape = preset.pop("shape", (1, 8, 8))
    model = glow64(shape, **preset)
    shapes = [tuple(s) for s in model.latent_shapes]
    dims = sum(math.prod(s) for s in shapes)
    cond = _condition(preset, 2, shape)
    eps = 0.8 * torch.randn(2, dims, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        x = model.decode_noise(unflat(eps, shapes), 1.0, cond)
        log_p = model.log_prob(x, cond)
    log_normal = -0.5 * (eps ** 2).sum(1) - 0.5 * dims * math.log(2 * math.pi)
    for i in range(2):
        c = None if cond is None else cond[i:i + 1]
        decode = lambda v: model.decode_noise(unflat(v, shapes), 1.0, c).flatten(1)  # noqa: E731
        expected = log_normal[i] - jacobian_logdet(decode, eps[i:i + 1])[0]
        assert abs(log_p[i].item() - expected.item()) < 1e-7, (name, i, log_p[i].item(), expected.item())
    # the split priors are not N(0, I) here, so a density without them would be a different number
    with torch.no_grad():
        zs, _ = model.encode(x, cond)
        standardised = model.encode_noise(x, cond)
    assert (zs[0] - standardised[0]).abs().max() > 1e-3


# -- squeeze ------------------------------------------------------------------------------------------
def test_squeeze_is_the_2x2_space_to_depth_permutation_and_refuses_odd_sizes():
    x = torch.arange(2 * 2 * 4 * 6, dtype=torch.float64).view(2, 2, 4, 6)
    y, logdet = Squeeze()(x)
    assert y.shape == (2, 8, 2, 3) and torch.equal(logdet, torch.zeros(2, dtype=torch.float64))
    for c in range(2):
        for i in range(2):
            for j in range(2):
                assert torch.equal(y[:, 4 * c + 2 * i + j], x[:, c, i::2, j::2])
    assert torch.equal(Squeeze().inverse(y)[0], x)
    for size in ((4, 5), (5, 4), (5, 5)):
        with pytest.raises(ValueError, match="must be even"):
            Squeeze()(torch.zeros(1, 1, *size))


# -- dequantisation and bits/dim ------------------------------------------------------------------------
@pytest.mark.parametrize("n_bits", [1, 3, 5, 8])
def test_dequantisation_is_bin_plus_uniform_noise_over_bins(n_bits):
    pixels = torch.arange(256, dtype=torch.uint8).repeat(40).view(40, 1, 16, 16)
    bins = 2 ** n_bits
    bin_index = torch.div(pixels.long(), 2 ** (8 - n_bits), rounding_mode="floor").double()
    assert torch.equal(reduce_bits(pixels, n_bits).double(), bin_index)
    u = torch.rand(pixels.shape, generator=torch.Generator().manual_seed(3))
    y = preprocess(pixels, n_bits, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(y.double(), (bin_index + u.double()) / bins - 0.5, rtol=0, atol=1e-6)
    torch.manual_seed(9)  # without a generator: torch's global stream, the same formula
    u = torch.rand(pixels.shape)
    torch.manual_seed(9)
    torch.testing.assert_close(preprocess(pixels, n_bits).double(), (bin_index + u.double()) / bins - 0.5,
                               rtol=0, atol=1e-6)
    noise = (y.double() + 0.5) * bins - bin_index  # the noise inside each bin: U[0, 1)
    assert noise.min() >= 0 and noise.max() < 1 and noise.min() < 0.01 and noise.max() > 0.99
    assert abs(noise.mean() - 0.5) < 0.01
    centres = preprocess(pixels, n_bits, dequantize=False).double()
    torch.testing.assert_close(centres, (bin_index + 0.5) / bins - 0.5, rtol=0, atol=1e-7)
    assert torch.equal(to_uint8(y, n_bits), (bin_index * 2 ** (8 - n_bits)).to(torch.uint8))
    assert torch.equal(to_uint8(centres.float(), n_bits), to_uint8(y, n_bits))
    # values outside the data box (a sampler's overshoot) clip to the first and last bins
    outside = to_uint8(torch.tensor([-0.9, -0.5, 0.5 - 1e-6, 0.5, 0.9]), n_bits).tolist()
    top = (bins - 1) * 2 ** (8 - n_bits)
    assert outside == [0, 0, top, top, top]


@pytest.mark.parametrize("num_dims,n_bits", [(3, 8), (192, 5), (784, 1)])
def test_bits_per_dim_is_nats_over_d_ln2_plus_n_bits(num_dims, n_bits):
    log_prob = torch.tensor([-1.5, 0.0, 40.0], dtype=torch.float64) * num_dims
    expected = -log_prob / (num_dims * LN2) + n_bits
    torch.testing.assert_close(bits_per_dim(log_prob, num_dims, n_bits), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_bits", [5, 8])
def test_evaluate_is_bits_per_dim_of_the_models_log_prob(n_bits):
    """A 3-channel Glow's evaluate(): bits/dim of ITS log_prob of the dequantised batch, with D = C*H*W
    and the batch's n_bits; an inpainting batch's hole_bpd charges all of it to the missing dimensions."""
    torch.manual_seed(0)
    model = perturb(Glow((3, 4, 4), levels=2, steps=1, hidden_channels=4, conditional="image", cond_channels=4))
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    hole = make_mask("center", 2, (4, 4))
    cond = make_condition(preprocess(images, n_bits, dequantize=False), hole)
    inputs = ModelInputs(images, torch.zeros(2, dtype=torch.long), n_bits, torch.Generator().manual_seed(1), cond, hole)
    figures = model.evaluate(inputs)
    x = preprocess(images, n_bits, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        nats = model.log_prob(x, cond).double()
    dims = 3 * 4 * 4
    torch.testing.assert_close(figures["bpd"], -nats / (dims * LN2) + n_bits, rtol=0, atol=1e-5)
    missing = 3 * hole.flatten(1).sum(1).double()
    torch.testing.assert_close(figures["hole_bpd"], (-nats + dims * n_bits * LN2) / (missing * LN2),
                               rtol=1e-6, atol=1e-5)
    loss, _ = model.objective(inputs, ObjectiveTerms())
    assert abs(loss.item() - figures["bpd"].mean().item()) < 1e-4
