"""Exactness checks shared by the tests and scripts/exactness_report.py: round trips and
log-determinants against the autograd Jacobian, on layers moved away from their identity init."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from glow.flows import ActNorm, ConditionalActNorm, ConditionalInvConv1x1, Coupling, DiagonalScale, InvConv1x1, InvConv1x1LU, Reverse, Shuffle, Squeeze
from glow.flows.coupling import COUPLINGS
from glow.model import Glow
from glow.model_args import PERMUTATIONS


@torch.no_grad()
def perturb(module: nn.Module, scale: float = 0.1, seed: int = 0) -> nn.Module:
    """Move every parameter away from its identity-like initialisation, so a check checks something."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    for m in module.modules():  # mark ActNorms initialised so nothing re-initialises behind the check's back
        if hasattr(m, "initialized"):
            m.initialized.fill_(True)
    return module


def jacobian_logdet(fn, x: Tensor) -> Tensor:
    """log|det J| of fn at each sample of x, by autograd (float64); fn maps [B, ...] -> [B, ...] per sample."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]

        def flat(v: Tensor) -> Tensor:
            return fn(v.view_as(xi)).reshape(-1)

        jac = torch.autograd.functional.jacobian(flat, xi.reshape(-1))
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


def layer_factories(channels: int = 4, height: int = 4, width: int = 4) -> dict:
    """One constructor per layer variant under glow/flows/ (couplings in every transform x pattern x parity)."""
    c = channels
    layers = {"actnorm": lambda: ActNorm(c), "diagonal_scale": lambda: DiagonalScale((c, height, width)),
              "conv": lambda: InvConv1x1(c), "conv_lu": lambda: InvConv1x1LU(c), "reverse": lambda: Reverse(c),
              "shuffle": lambda: Shuffle(c, seed=3), "squeeze": lambda: Squeeze()}
    for transform, pattern, parity in itertools.product(("additive", "affine", "spline"),
                                                        ("channel", "checkerboard"), (0, 1)):
        layers[f"{transform}-{pattern}-{parity}"] = (
            lambda t=transform, m=pattern, p=parity: Coupling(c, 16, t, m, parity=p, spline_bins=5))
    layers["affine-conditional"] = lambda: Coupling(c, 16, "affine", cond_channels=3)
    layers["spline-conditional"] = lambda: Coupling(c, 16, "spline", "checkerboard", cond_channels=3)
    layers["cond_actnorm"] = lambda: ConditionalActNorm(c, cond_channels=3)
    layers["cond_conv1x1"] = lambda: ConditionalInvConv1x1(c, cond_channels=3)
    return layers


def condition_for(layer: nn.Module, x: Tensor) -> Tensor | None:
    """A fixed random condition when the layer (or its coupling network) takes one, else None."""
    channels = getattr(layer, "cond_channels", 0) or getattr(getattr(layer, "net", None), "cond_channels", 0)
    if channels:
        return torch.randn(x.shape[0], channels, *x.shape[-2:], dtype=x.dtype,
                           generator=torch.Generator().manual_seed(7))
    return None


def layer_round_trip(make, dtype: torch.dtype = torch.float64) -> float:
    """Worst |inverse(forward(x)) - x| of one perturbed layer in ``dtype``."""
    layer = perturb(make(), 0.1).to(dtype)
    x = torch.randn(5, 4, 4, 4, dtype=dtype) * 1.5
    cond = condition_for(layer, x)
    y, _ = layer(x, cond)
    return (layer.inverse(y, cond)[0] - x).abs().max().item()


def layer_logdet_error(make) -> float:
    """Worst |logdet - log|det J|| of one perturbed layer in float64, J by autograd."""
    layer = perturb(make(), 0.1).double()
    x = torch.randn(1, 4, 4, 4, dtype=torch.float64) * 1.5
    cond = condition_for(layer, x)
    expected = jacobian_logdet(lambda v: layer(v, cond)[0], x)
    return (layer(x, cond)[1] - expected).abs().max().item()


def model_errors(coupling: str, permutation: str) -> tuple[float, float, float]:
    """(float64 round trip, float32 round trip, float64 logdet vs autograd) of a small perturbed Glow."""
    torch.manual_seed(0)
    model = perturb(Glow((2, 8, 8), levels=2, steps=2, hidden_channels=16, coupling=coupling,
                         permutation=permutation, spline_bins=4)).double()
    x = torch.rand(4, 2, 8, 8, dtype=torch.float64) - 0.5
    zs, _ = model.encode(x)
    f64 = (model.decode(zs) - x).abs().max().item()
    model, x = model.float(), x.float()
    zs, _ = model.encode(x)
    f32 = (model.decode(zs) - x).abs().max().item()
    tiny = perturb(Glow((1, 4, 4), levels=2, steps=2, hidden_channels=8, coupling=coupling,
                        permutation=permutation, spline_bins=4)).double()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64) - 0.5
    flat = lambda v: torch.cat([z.flatten(1) for z in tiny.encode(v)[0]], 1)  # noqa: E731
    return f64, f32, (tiny.encode(x)[1] - jacobian_logdet(flat, x)).abs().max().item()


def model_variants() -> list[tuple[str, str]]:
    """Every (coupling, permutation) of Glow."""
    return list(itertools.product(COUPLINGS, PERMUTATIONS))
