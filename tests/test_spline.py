import pytest
import torch

from glow.flows.spline import rational_quadratic_spline

K = 8
BOUND = 3.0


def _params(shape, dtype, scale=1.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = scale * torch.randn(*shape, K, generator=g, dtype=dtype)
    h = scale * torch.randn(*shape, K, generator=g, dtype=dtype)
    d = scale * torch.randn(*shape, K - 1, generator=g, dtype=dtype)
    return w, h, d


def _inputs(shape, dtype, seed=1):
    # ~4*randn: plenty of mass both inside and well beyond the tail bound.
    x = 4 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    assert (x.abs() < BOUND).any() and (x.abs() > BOUND).any()
    return x


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_inverse_roundtrip_and_logdet_cancel(dtype):
    shape = (64, 16)
    x = _inputs(shape, dtype)
    params = _params(shape, dtype)
    y, lad_f = rational_quadratic_spline(x, *params, tail_bound=BOUND)
    x_rec, lad_i = rational_quadratic_spline(y, *params, inverse=True, tail_bound=BOUND)
    assert y.dtype == x_rec.dtype == lad_f.dtype == dtype
    assert y.shape == lad_f.shape == shape
    assert lad_f.min() < -5  # the map is far from the identity inside (slopes down to ~1e-4)
    err = (x_rec - x).abs()
    if dtype == torch.float64:
        assert err.max() < 1e-10
        assert (lad_f + lad_i).abs().max() < 1e-10
    else:
        # Rounding y to float32 (~1e-7) is amplified by the inverse's slope 1/f'(x), which
        # reaches ~e^10 for these parameters: no float32 implementation can beat that. So the
        # 1e-5 bound is absolute where f' >= 1 and is scaled by the condition number 1/f' elsewhere.
        assert (err / torch.clamp(torch.exp(-lad_f), min=1.0)).max() < 1e-5
        assert (lad_f + lad_i).abs().max() < 1e-2  # likewise amplified by d(logdet)/dx


def test_logabsdet_matches_autograd():
    dtype = torch.float64
    x = _inputs((256,), dtype).requires_grad_()
    params = _params((256,), dtype)
    for inverse in (False, True):
        y, lad = rational_quadratic_spline(x, *params, inverse=inverse, tail_bound=BOUND)
        (dydx,) = torch.autograd.grad(y.sum(), x)
        assert torch.isfinite(dydx).all() and (dydx > 0).all()
        assert (lad - dydx.log()).abs().max() < 1e-8


@pytest.mark.parametrize("inverse", [False, True])
def test_monotone_and_identity_tails(inverse):
    dtype = torch.float64
    grid = torch.linspace(-5, 5, 2001, dtype=dtype)
    params = _params((1,), dtype)
    params = [p.expand(grid.shape[0], -1) for p in params]
    y, lad = rational_quadratic_spline(grid, *params, inverse=inverse, tail_bound=BOUND)
    assert (y[1:] > y[:-1]).all()
    tails = grid.abs() > BOUND
    assert torch.equal(y[tails], grid[tails])
    assert torch.equal(lad[tails], torch.zeros_like(lad[tails]))
    # the knots at +-tail_bound are fixed points
    edge = torch.tensor([-BOUND, BOUND], dtype=dtype)
    y_edge, _ = rational_quadratic_spline(edge, *[p[:2] for p in params], inverse=inverse, tail_bound=BOUND)
    assert (y_edge - edge).abs().max() < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_params_is_identity(dtype):
    x = _inputs((500,), dtype)
    zeros = [torch.zeros(500, n, dtype=dtype) for n in (K, K, K - 1)]
    for inverse in (False, True):
        y, lad = rational_quadratic_spline(x, *zeros, inverse=inverse, tail_bound=BOUND)
        assert (y - x).abs().max() < 1e-6
        assert lad.abs().max() < 1e-6


def test_gradients_finite():
    dtype = torch.float32
    x = _inputs((32, 8), dtype)
    x = torch.cat([x.flatten(), torch.tensor([-BOUND, BOUND, 0.0, 10.0, -10.0])]).requires_grad_()
    params = [p.requires_grad_() for p in _params((x.shape[0],), dtype)]
    for inverse in (False, True):
        y, lad = rational_quadratic_spline(x, *params, inverse=inverse, tail_bound=BOUND)
        grads = torch.autograd.grad((y ** 2).sum() + lad.sum(), [x, *params])
        for g in grads:
            assert torch.isfinite(g).all()
        assert grads[1].abs().sum() > 0  # parameters actually receive signal


def test_all_tails_and_leading_dims():
    x = torch.tensor([[4.0, -7.0], [3.5, 100.0]])
    params = _params((2, 2), torch.float32)
    y, lad = rational_quadratic_spline(x, *params, tail_bound=BOUND)
    assert torch.equal(y, x) and torch.equal(lad, torch.zeros_like(x))
