"""glow.gemm_conv: the coupling network's convolutions as GEMMs give F.conv2d's values and gradients
(float64), alone and inside a whole Glow."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glow import gemm_conv, nets
from glow.model import Glow


@pytest.mark.parametrize("c_in,c_out,k", [(3, 7, 3), (7, 3, 3), (5, 5, 3), (6, 4, 1)],
                         ids=["im2col", "col2im", "square", "1x1"])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_nhwc_equals_conv2d(c_in, c_out, k, bias):
    torch.manual_seed(0)
    x = torch.randn(2, c_in, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c_out, c_in, k, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, requires_grad=True) if bias else None
    leaves = [x, w] + ([b] if bias else [])
    reference = F.conv2d(x, w, b, padding=k // 2)
    ours = gemm_conv.conv_nhwc(x.permute(0, 2, 3, 1), w, b).permute(0, 3, 1, 2)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(reference)
    for a, r in zip(torch.autograd.grad(ours, leaves, g), torch.autograd.grad(reference, leaves, g)):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


def test_im2col_and_col2im_are_adjoint():
    torch.manual_seed(0)
    x, z = torch.randn(2, 4, 3, 5, dtype=torch.float64), torch.randn(2, 4, 3, 3, 3, 5, dtype=torch.float64)
    lhs = (gemm_conv._Im2col.apply(x) * z).sum()
    rhs = (x * gemm_conv._Col2im.apply(z)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


def _log_prob_and_grads(model: Glow, x: torch.Tensor, cond, gemm: bool):
    previous = gemm_conv.ENABLED, gemm_conv.MIN_ROWS
    gemm_conv.ENABLED, gemm_conv.MIN_ROWS = gemm, 0
    used = []
    hook = [m.register_forward_hook(lambda mod, inp, out: used.append(gemm_conv.applies(inp[0])))
            for m in model.modules() if isinstance(m, nets.CouplingNet)]
    try:
        model.zero_grad(set_to_none=True)
        log_p = model.log_prob(x, cond)
        log_p.sum().backward()
    finally:
        gemm_conv.ENABLED, gemm_conv.MIN_ROWS = previous
        for h in hook:
            h.remove()
    assert used and all(u == gemm for u in used)  # the path under test really ran
    return log_p.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", [{}, {"conditional": "image"}, {"channels_last": True}, {"inner_actnorm": False},
                                  {"memory": "invertible"}],
                         ids=["plain", "image-conditional", "channels_last", "no-inner-actnorm", "invertible"])
def test_glow_log_prob_and_gradients_match_the_conv_path(kind):
    """The whole model, float64, every parameter perturbed so no coupling is the identity."""
    torch.manual_seed(0)
    model = Glow((3, 8, 8), levels=2, steps=2, hidden_channels=8, **kind).double()
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64) - 0.5
    cond = torch.rand(3, 4, 8, 8, dtype=torch.float64) if kind.get("conditional") else None
    model.initialize(x, cond)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    conv_lp, conv_grads = _log_prob_and_grads(model, x, cond, gemm=False)
    gemm_lp, gemm_grads = _log_prob_and_grads(model, x, cond, gemm=True)
    torch.testing.assert_close(gemm_lp, conv_lp, rtol=1e-10, atol=1e-9)
    assert gemm_grads.keys() == conv_grads.keys()
    for name, g in conv_grads.items():
        torch.testing.assert_close(gemm_grads[name], g, rtol=1e-9, atol=1e-9, msg=name)


def test_applies_only_when_switched_on_and_where_it_pays(monkeypatch):
    big = torch.zeros(64, 6, 16, 16)
    assert not gemm_conv.applies(big)  # off by default: it did not pay in the training loop
    monkeypatch.setattr(gemm_conv, "ENABLED", True)
    assert gemm_conv.applies(big)
    assert not gemm_conv.applies(torch.zeros(64, 12, 8, 8))  # 4096 rows: oneDNN's conv is as fast
    assert not gemm_conv.applies(big.half())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not gemm_conv.applies(big)
