"""PixelActNorm: a per-pixel ActNorm on the input. Exact, data-initialised, gain capped."""

from __future__ import annotations

import torch

from glow import Glow
from glow.flows.actnorm import PixelActNorm
from tests.helpers import jacobian_logdet, perturb


def test_init_normalises_every_pixel_and_caps_the_gain():
    torch.manual_seed(0)
    layer = PixelActNorm((2, 4, 4)).double()
    x = torch.randn(512, 2, 4, 4, dtype=torch.float64) * torch.linspace(0.1, 2, 32).view(1, 2, 4, 4).double() + 3
    x[:, 0, 0, 0] = -0.5 + torch.rand(512, dtype=torch.float64) / 256  # a near-constant (MNIST-black) pixel
    layer.init_pending = True
    y, _ = layer(x)
    assert y.mean(0).abs().max() < 1e-10
    std = y.std(0, unbiased=False)
    assert (std.flatten()[1:] - 1).abs().max() < 1e-10
    assert torch.isclose(layer.log_scale[0, 0, 0, 0], -torch.log(torch.tensor(PixelActNorm.min_std)).double())


def test_exact_inverse_and_jacobian_logdet():
    layer = perturb(PixelActNorm((2, 3, 3)), 0.5).double()
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    y, logdet = layer(x)
    x_back, inverse_logdet = layer.inverse(y)
    assert (x_back - x).abs().max() < 1e-12 and torch.allclose(logdet, -inverse_logdet)
    assert torch.allclose(logdet, jacobian_logdet(lambda v: layer(v)[0], x), atol=1e-10)


def test_glow_with_pixel_actnorm_is_exact():
    torch.manual_seed(0)
    model = Glow((2, 8, 8), levels=2, steps=2, hidden_channels=8, pixel_actnorm=True).double()
    x = torch.rand(32, 2, 8, 8, dtype=torch.float64) - 0.5
    assert model.initialize(x) and model.pixel_norm.initialized
    perturb(model, 0.02)
    zs, logdet = model.encode(x[:2])
    assert (model.decode(zs) - x[:2]).abs().max() < 1e-10

    def flat(v):
        return torch.cat([z.flatten(1) for z in model.encode(v)[0]], dim=1)
    assert torch.allclose(logdet, jacobian_logdet(flat, x[:2]), atol=1e-8)
