"""The flows on vectors (planar, radial, Sylvester, MADE/MAF/IAF): logdet against the autograd Jacobian in
float64, exact round trips where an inverse exists, invertibility for arbitrary raw parameters, and the
MADE masks' triangular Jacobian."""

from __future__ import annotations

import pytest
import torch

from glow.exactness import jacobian_logdet, perturb
from glow.flows.iaf import IAF
from glow.flows.made import MADE, orders
from glow.flows.maf import MAF
from glow.flows.planar import Planar
from glow.flows.radial import Radial
from glow.flows.sylvester import Sylvester
from glow.flows.vector import Logit, VectorActNorm

D, COND = 6, 5

LAYERS = {
    "planar": lambda c: Planar(D, c),
    "radial": lambda c: Radial(D, c),
    "sylvester_o": lambda c: Sylvester(D, c, "orthogonal", num_columns=4),
    "sylvester_h": lambda c: Sylvester(D, c, "householder", householder=3),
    "sylvester_t": lambda c: Sylvester(D, c, "triangular", flip=True),
    "maf": lambda c: MAF(D, 16, orders(D, 1, "random", seed=1)[0], cond_dim=c),
    "iaf": lambda c: IAF(D, 16, orders(D, 2)[1], cond_dim=c),
    "actnorm": lambda c: VectorActNorm(D),
}
INVERTIBLE = [name for name in LAYERS if not name.startswith("sylvester")]


def build(name: str, amortised: bool, scale: float = 0.3):
    layer = perturb(LAYERS[name](COND if amortised and name != "actnorm" else 0), scale=scale).double()
    cond = torch.randn(3, COND, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) \
        if amortised and name != "actnorm" else None
    return layer, cond


@pytest.mark.parametrize("amortised", [False, True])
@pytest.mark.parametrize("name", LAYERS)
def test_logdet_matches_autograd_jacobian(name, amortised):
    layer, cond = build(name, amortised)
    x = torch.randn(3, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y, logdet = layer(x, cond)
    assert logdet.shape == (3,) and logdet.dtype == torch.float64
    assert (y - x).abs().max() > 1e-3, "the layer is still the identity: nothing tested"
    for i in range(3):
        c = None if cond is None else cond[i:i + 1]
        expected = jacobian_logdet(lambda v: layer(v, c)[0], x[i:i + 1])
        assert torch.allclose(logdet[i:i + 1], expected, atol=1e-9, rtol=0), (name, logdet[i], expected)


@pytest.mark.parametrize("amortised", [False, True])
@pytest.mark.parametrize("name", INVERTIBLE)
def test_round_trip_and_cancelling_logdets(name, amortised):
    layer, cond = build(name, amortised)
    x = torch.randn(3, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 1.5
    y, ld_fwd = layer(x, cond)
    x_rec, ld_inv = layer.inverse(y, cond)
    assert (x_rec - x).abs().max() <= 1e-9
    assert (ld_fwd + ld_inv).abs().max() <= 1e-9


def test_sylvester_has_no_inverse_and_says_so():
    with pytest.raises(NotImplementedError, match="no closed-form inverse"):
        Sylvester(D).inverse(torch.zeros(2, D))


@pytest.mark.parametrize("seed", range(5))
def test_planar_and_radial_invertible_for_arbitrary_raw_parameters(seed):
    """Huge raw parameters (pushing towards wᵀu << -1 and β << -α): the constraints keep the Jacobian
    positive, and the inverse still recovers x."""
    generator = torch.Generator().manual_seed(seed)
    for layer in (Planar(D), Radial(D)):
        layer = layer.double()
        with torch.no_grad():
            layer.source.raw.copy_(torch.randn(layer.source.raw.shape, generator=generator, dtype=torch.float64) * 4)
            if isinstance(layer, Planar):  # u = -c w: the raw parameters violate wᵀu >= -1 by far
                w = layer.source.raw[D:2 * D]
                layer.source.raw[:D] = -3 * w
            else:  # β_raw very negative: softplus keeps β > -α
                layer.source.raw[D + 1] = -30.0
        x = torch.randn(4, D, dtype=torch.float64, generator=generator) * 2
        y, logdet = layer(x)
        assert torch.isfinite(logdet).all()
        for i in range(4):  # a positive Jacobian determinant everywhere checked
            jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x[i])
            sign, _ = torch.linalg.slogdet(jac)
            assert sign > 0
        assert (layer.inverse(y)[0] - x).abs().max() <= 1e-8
    planar = Planar(D).double()
    u, w, _ = planar.parameters_for(torch.zeros(1, D, dtype=torch.float64), None)
    assert (u * w).sum() > -1


@pytest.mark.parametrize("kind", ["alternating", "random"])
def test_made_jacobian_is_triangular_in_its_order(kind):
    for order in orders(D, 2, kind, seed=3):
        layer = perturb(MAF(D, 16, order), scale=0.3).double()
        x = torch.randn(D, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x)
        in_order = jac[order][:, order]  # rows and columns sorted by the order
        assert torch.count_nonzero(torch.triu(in_order, diagonal=1)) == 0
        assert (torch.diagonal(in_order).abs() > 0).all()
        assert torch.count_nonzero(torch.tril(in_order, diagonal=-1)) > 0, "nothing depends on anything"


def test_made_masks_are_built_once_and_saved():
    made = MADE(D, 16, orders(D, 1)[0])
    masks = [m for name, m in made.named_buffers() if name.endswith("mask")]
    assert len(masks) == 3 and all(m.dtype == torch.float32 for m in masks)
    assert set(n for n in made.state_dict() if n.endswith("mask")) == {"hidden.0.mask", "hidden.1.mask", "out.mask"}


def test_fresh_autoregressive_layers_are_the_identity():
    x = torch.randn(4, D)
    for layer in (MAF(D, 16, orders(D, 1)[0]), IAF(D, 16, orders(D, 1)[0])):
        y, logdet = layer(x)
        assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(4))


def test_logit_round_trip_and_jacobian():
    layer = Logit(1e-6)
    y = torch.rand(3, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 0.5
    z, logdet = layer(y)
    back, logdet_inv = layer.inverse(z)
    assert (back - y).abs().max() < 1e-12 and (logdet + logdet_inv).abs().max() < 1e-9
    for i in range(3):
        expected = jacobian_logdet(lambda v: layer(v)[0], y[i:i + 1])
        assert torch.allclose(logdet[i:i + 1], expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", [n for n in LAYERS if n != "actnorm"])
def test_one_cond_row_per_group_equals_the_repeated_cond(name):
    """A VAE passes one cond row per image for its S samples per image: the same as repeating each row S times."""
    layer, _ = build(name, amortised=True)
    x = torch.randn(12, D, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    cond = torch.randn(3, COND, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y, logdet = layer(x, cond)
    y_rep, logdet_rep = layer(x, cond.repeat_interleave(4, 0))
    assert torch.allclose(y, y_rep, atol=1e-12, rtol=0) and torch.allclose(logdet, logdet_rep, atol=1e-12, rtol=0)
    assert not torch.allclose(y, layer(x, cond.repeat(4, 1))[0]), "rows must serve consecutive samples"
    with pytest.raises(ValueError, match="cond has 5 rows for a batch of 12"):
        layer(x, torch.randn(5, COND, dtype=torch.float64))


@pytest.mark.parametrize("amortised", [False, True])
@pytest.mark.parametrize("name", ["planar", "radial", "sylvester_o", "sylvester_h", "sylvester_t"])
def test_small_raw_parameters_give_a_near_identity_layer(name, amortised):
    """A fresh layer (raw parameters ~0.01) barely moves z, so a flow posterior starts where the plain
    one does. The paper's planar m(a) = -1 + softplus(a) failed this: wᵀû = -0.31 with a small w made
    ||û|| >= 0.31 / ||w|| large (||f(z) - z|| up to 1.3 here)."""
    torch.manual_seed(0)
    layer = LAYERS[name](COND if amortised else 0).double()
    for p in layer.parameters():  # small raw parameters, whatever the layer's own init
        torch.nn.init.normal_(p, std=0.01)
    cond = torch.randn(64, COND, dtype=torch.float64) if amortised else None
    x = torch.randn(64, D, dtype=torch.float64)
    y, logdet = layer(x, cond)
    assert (y - x).norm(dim=-1).max() < 0.1 and logdet.abs().max() < 0.3, ((y - x).norm(dim=-1).max(), logdet)
