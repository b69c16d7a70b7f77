"""Every flow layer: exact inverse, log-determinant equal to the autograd Jacobian's, cancelling logdets."""

from __future__ import annotations

import pytest
import torch

from glow.flows import ActNorm, Coupling, InvConv1x1, InvConv1x1LU
from glow.flows.coupling import checkerboard
from glow.exactness import condition_for, jacobian_logdet, layer_factories, perturb

C, H, W = 4, 4, 4


LAYERS = layer_factories(C, H, W)
cond_for = condition_for


@pytest.mark.parametrize("name", LAYERS)
def test_round_trip_float64(name):
    layer = perturb(LAYERS[name](), scale=0.1).double()
    x = torch.randn(5, C, H, W, dtype=torch.float64) * 1.5
    cond = cond_for(layer, x)
    y, ld_fwd = layer(x, cond)
    x_rec, ld_inv = layer.inverse(y, cond)
    assert ld_fwd.shape == (5,) and ld_fwd.dtype == torch.float64
    assert y.shape != x.shape or (y - x).abs().max() > 1e-2, "the layer is still the identity: nothing tested"
    assert (x_rec - x).abs().max() <= 1e-10
    assert (ld_fwd + ld_inv).abs().max() <= 1e-10


@pytest.mark.parametrize("name", LAYERS)
def test_round_trip_float32(name):
    layer = perturb(LAYERS[name](), scale=0.1)
    x = torch.randn(5, C, H, W)
    cond = cond_for(layer, x)
    y, ld_fwd = layer(x, cond)
    x_rec, _ = layer.inverse(y, cond)
    assert ld_fwd.dtype == torch.float32
    assert (x_rec - x).abs().max() <= 1e-5


@pytest.mark.parametrize("name", LAYERS)
def test_logdet_matches_autograd_jacobian(name):
    layer = perturb(LAYERS[name](), scale=0.1).double()
    x = torch.randn(2, C, H, W, dtype=torch.float64)
    cond = cond_for(layer, x)
    expected = jacobian_logdet(lambda v: layer(v, None if cond is None else cond[:1])[0], x[:1])
    _, logdet = layer(x[:1], None if cond is None else cond[:1])
    assert torch.allclose(logdet, expected, atol=1e-8, rtol=0)
    expected_inv = jacobian_logdet(lambda v: layer.inverse(v, None if cond is None else cond[:1])[0], x[:1])
    _, logdet_inv = layer.inverse(x[:1], None if cond is None else cond[:1])
    assert torch.allclose(logdet_inv, expected_inv, atol=1e-8, rtol=0)


def test_couplings_start_as_identity():
    for transform in ("additive", "spline"):
        layer = Coupling(C, 16, transform)
        x = torch.randn(3, C, H, W)
        y, logdet = layer(x)
        assert torch.allclose(y, x, atol=1e-6) and logdet.abs().max() < 1e-5


def test_coupling_leaves_conditioning_half_untouched():
    layer = perturb(Coupling(C, 16, "affine", "checkerboard", parity=1), 0.5)
    x = torch.randn(2, C, H, W)
    y, _ = layer(x)
    m = checkerboard(H, W, 1)
    assert torch.equal(y * m, x * m) and not torch.allclose(y, x)


def test_spline_coupling_monotone_beyond_tail_bound():
    layer = perturb(Coupling(2, 16, "spline", spline_bins=6, spline_tail_bound=2.0), 0.5).double()
    grid = torch.linspace(-6, 6, 801, dtype=torch.float64)
    x = torch.zeros(801, 2, 1, 1, dtype=torch.float64)
    x[:, 1, 0, 0] = grid  # transformed channel; channel 0 (the conditioner) fixed
    y, _ = layer(x)
    assert (y[1:, 1, 0, 0] - y[:-1, 1, 0, 0]).min() > 0
    x_rec, _ = layer.inverse(y)
    assert (x_rec - x).abs().max() < 1e-9  # perturbed exp(3*logs) output scales make the spline steep


def test_actnorm_data_dependent_init_and_persistent_flag():
    layer = ActNorm(C)
    x = torch.randn(64, C, H, W) * torch.tensor([0.1, 2.0, 5.0, 1.0]).view(1, C, 1, 1) + 3.0
    layer.init_pending = True
    y, _ = layer(x)
    layer.init_pending = False
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (y.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-2
    assert "initialized" in layer.state_dict() and bool(layer.state_dict()["initialized"])
    # a fresh layer that loads the state does not re-initialise on new data
    fresh = ActNorm(C)
    fresh.load_state_dict(layer.state_dict())
    fresh.init_pending = True
    fresh(torch.randn(8, C, H, W) * 100)
    assert torch.equal(fresh.loc, layer.loc) and torch.equal(fresh.log_scale, layer.log_scale)


def test_actnorm_without_explicit_init_does_not_initialise():
    layer = ActNorm(C)
    layer(torch.randn(8, C, H, W) * 10 + 4)
    assert not bool(layer.initialized) and layer.loc.abs().max() == 0


def test_actnorm_zero_variance_channel_is_finite():
    layer = ActNorm(2)
    x = torch.randn(16, 2, 3, 3)
    x[:, 1] = 0.25
    layer.init_pending = True
    y, logdet = layer(x)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    assert torch.isfinite(layer.inverse(y)[0]).all()


def test_conv1x1_starts_as_rotation():
    for layer in (InvConv1x1(6), InvConv1x1LU(6)):
        w = layer.weight()
        assert torch.allclose(w @ w.T, torch.eye(6, dtype=w.dtype), atol=1e-6)
        assert abs(layer.log_abs_det()) < 1e-6


@pytest.mark.parametrize("cls", [InvConv1x1, InvConv1x1LU])
def test_conv1x1_no_grad_cache_follows_every_change_of_the_weights(cls):
    """The no-grad W, W^-1 and logdet are cached (glow.flows.conv1x1): the cache must never
    outlive a change of the parameters, whether by an optimiser step, load_state_dict, an in-place
    edit or a dtype change, and with grad enabled W must come with its graph."""
    layer = perturb(cls(4), 0.3)
    x = torch.randn(3, 4, 2, 2)

    def fresh(inverse=False):  # W (or W^-1) assembled now, bypassing the cache
        w = layer.weight().detach()
        return torch.linalg.inv(w) if inverse else w

    with torch.no_grad():
        first = layer.mixing_matrix(False, torch.float32)
        assert layer.mixing_matrix(False, torch.float32) is first  # cached
        y_cached, logdet_cached = layer(x)
        x_cached, logdet_inv_cached = layer.inverse(y_cached)
    y_fresh, logdet_fresh = layer(x)  # grad enabled: W assembled afresh, no cache
    torch.testing.assert_close(y_cached, y_fresh.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(logdet_cached, logdet_fresh.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(x_cached, x, rtol=0, atol=1e-5)  # the cached W^-1 inverts the cached W
    torch.testing.assert_close(logdet_inv_cached, -logdet_cached, rtol=0, atol=0)
    optimizer = torch.optim.Adamax(layer.parameters(), lr=0.1)
    layer(x)[0].square().sum().backward()
    optimizer.step()
    with torch.no_grad():
        stepped = layer.mixing_matrix(False, torch.float32)
        assert not torch.allclose(stepped, first) and torch.allclose(stepped, fresh().float())
        assert torch.allclose(layer.mixing_matrix(True, torch.float64), fresh(True))
        fresh_logdet = (4 * layer.log_abs_det()).float()  # x is 2x2: four pixels
        assert torch.allclose(layer(x)[1], fresh_logdet) and torch.allclose(layer.inverse(x)[1], -fresh_logdet)
    other = perturb(cls(4), 0.3)
    layer.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.allclose(layer.mixing_matrix(False, torch.float64), other.weight())
        next(layer.parameters()).mul_(1.5)
        assert torch.allclose(layer.mixing_matrix(False, torch.float64), fresh())
        y, _ = layer(x)
    assert torch.allclose(layer.inverse(y)[0], x, atol=1e-5)
    layer.double()
    with torch.no_grad():
        assert layer.mixing_matrix(False, torch.float64).dtype == torch.float64
        assert torch.allclose(layer.mixing_matrix(False, torch.float64), fresh())
    assert layer.mixing_matrix(False, torch.float64).requires_grad  # grad enabled: W with its graph


@pytest.mark.parametrize("cls", [InvConv1x1, InvConv1x1LU])
def test_conv1x1_channels_last_gemm_equals_the_convolution(cls):
    """A channels_last input takes the GEMM path of glow.flows.conv1x1._mix: the same map, inverse,
    logdet and gradients (float64) as the NCHW convolution, and the output stays channels_last."""
    layer = perturb(cls(6), 0.3).double()
    x = torch.randn(3, 6, 5, 4, dtype=torch.float64)
    x_last = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    x = x.requires_grad_(True)
    (y, ld), (y_last, ld_last) = layer(x), layer(x_last)
    assert y_last.is_contiguous(memory_format=torch.channels_last) and not y_last.is_contiguous()
    torch.testing.assert_close(y_last, y, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.inverse(y_last)[0], x.detach(), rtol=0, atol=1e-12)
    probe = torch.randn_like(y)
    grads = torch.autograd.grad((y * probe).sum() + ld.sum(), [x, *layer.parameters()])
    grads_last = torch.autograd.grad((y_last * probe).sum() + ld_last.sum(), [x_last, *layer.parameters()])
    for g, g_last in zip(grads, grads_last):
        torch.testing.assert_close(g_last, g, rtol=1e-12, atol=1e-12)


def test_lu_structure_is_kept():
    """W = P L U with L unit lower-triangular and U's diagonal exp(log_s), whatever the free parameters hold:
    the entries outside the structure (L's diagonal and upper part, U's lower part) must not reach W."""
    layer = perturb(InvConv1x1LU(5), 0.5)
    w = layer.weight()
    with torch.no_grad():
        layer.lower.add_(torch.triu(torch.randn(5, 5), 0))  # on and above L's diagonal
        layer.upper.add_(torch.tril(torch.randn(5, 5), 0))  # on and below U's diagonal
    assert torch.equal(layer.weight(), w)
    assert torch.allclose(torch.linalg.slogdet(w)[1], layer.log_s.double().sum(), atol=1e-10)


@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_a_bounded_coupling_input_keeps_the_flow_exact_and_never_extrapolates(mask):
    """model.coupling_input_bound: the network sees B tanh(x / B). The coupling stays an exact bijection
    with the autograd Jacobian's logdet, and an input 1000x outside the range gives the network the same
    output as one at 40x (it cannot extrapolate), where the unbounded network's output keeps growing."""
    torch.manual_seed(0)
    layer = perturb(Coupling(4, 8, "affine", mask, affine_scale="tanh", input_bound=3.0), 0.5).double()
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    y, logdet = layer(x)
    back, _ = layer.inverse(y)
    assert (back - x).abs().max() < 1e-12
    assert torch.allclose(logdet, jacobian_logdet(lambda v: layer(v)[0], x), atol=1e-9)
    seen = x.sign() * (1 + x.abs())  # what the network sees: the first half, or the checkerboard's squares
    seen = seen[:, :2] if mask == "channel" else seen * checkerboard(4, 4, 0, x.device, x.dtype)
    far, farther = seen * 40, seen * 1000
    assert (layer.net(far) - layer.net(farther)).abs().max() < 1e-6
    free = perturb(Coupling(4, 8, "affine", mask, affine_scale="tanh"), 0.5).double()
    free.load_state_dict(layer.state_dict())
    assert (free.net(farther) - free.net(far)).abs().max() > 1.0
