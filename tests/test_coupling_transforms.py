"""The couplings' registry (glow.flows.coupling.TRANSFORMS): every elementwise map is the identity at
zero parameters (Glow's sigmoid affine: a contraction by sigmoid(2)), inverts exactly, has the autograd log-derivative, and its ``rebuild`` (used by
model.memory=invertible) agrees with inverse then forward; the one check of coupling, mask and scale."""

from __future__ import annotations

import pytest
import torch

from glow.flows.coupling import COUPLINGS, TRANSFORMS, Coupling, check_coupling_arguments
from glow.flows.elementwise import AFFINE_SCALES
from glow import families

MAPS = [(name, scale) for name in COUPLINGS for scale in (AFFINE_SCALES if name == "affine" else ["sigmoid"])]


def _map(name: str, scale: str):
    return TRANSFORMS[name].from_options(affine_scale=scale, spline_bins=5, spline_tail_bound=2.0)


@pytest.mark.parametrize("name,scale", MAPS)
def test_every_map_is_exact(name, scale):
    g = _map(name, scale)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64) * 1.5
    zero = torch.zeros(2, 3, g.params_per_dim, 4, 4, dtype=torch.float64)
    y0, ld0 = g.forward(x, zero)
    start = torch.tensor(2.0, dtype=torch.float64).sigmoid() if (name, scale) == ("affine", "sigmoid") else 1.0
    assert torch.allclose(y0, x * start, atol=1e-12)
    assert torch.allclose(ld0, torch.full_like(ld0, float(torch.log(torch.as_tensor(start)))), atol=1e-12)
    params = torch.randn_like(zero)
    y, ld = g.forward(x, params)
    assert (y - x).abs().max() > 1e-2, "still the identity: nothing tested"
    x_back, ld_inv = g.inverse(y, params)
    assert (x_back - x).abs().max() < 1e-10 and (ld + ld_inv).abs().max() < 1e-10
    # elementwise: log|dy/dx| per element is the diagonal of the Jacobian
    v = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(g.forward(v, params)[0].sum(), v)
    assert torch.allclose(ld, grad.abs().log(), atol=1e-10)
    v, y_again, ld_again = g.rebuild(y, params)
    assert v.requires_grad and v.grad_fn is None
    assert (v - x).abs().max() < 1e-10 and (y_again - y).abs().max() < 1e-10 and (ld_again - ld).abs().max() < 1e-10
    (grad_again,) = torch.autograd.grad(y_again.sum(), v)
    assert torch.allclose(grad_again, grad, atol=1e-10)


@pytest.mark.parametrize("key,value", [("coupling", "bogus"), ("mask", "star"), ("affine_scale", "exp")])
def test_one_check_for_coupling_mask_and_scale(key, value):
    allowed = {"coupling": COUPLINGS, "mask": ("channel", "checkerboard"), "affine_scale": tuple(AFFINE_SCALES)}[key]
    message = f"model.{key}={value!r} is not allowed: use one of {', '.join(allowed)}"
    arguments = {"coupling": "affine", "mask": "channel", "affine_scale": "sigmoid", key: value}
    for check in (lambda: check_coupling_arguments(**arguments), lambda: families.check(arguments),
                  lambda: Coupling(4, 8, arguments["coupling"], arguments["mask"],
                                   affine_scale=arguments["affine_scale"])):
        with pytest.raises(ValueError) as err:
            check()
        assert str(err.value) == message


def test_a_coupling_holds_no_state_beyond_its_network():
    for name in COUPLINGS:
        layer = Coupling(4, 8, name)
        assert all(key.startswith("net.") for key in layer.state_dict())
