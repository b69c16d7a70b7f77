"""Worst round-trip and logdet errors over every layer and every coupling x permutation Glow (the figures in the closing note).

    PYTHONPATH=. python scripts/exactness_report.py
"""
import itertools, torch
from tests.test_flows import LAYERS, cond_for
from tests.helpers import perturb, jacobian_logdet
from glow import Glow
from glow.model import PERMUTATIONS
from glow.flows.coupling import COUPLINGS
torch.set_num_threads(1)
torch.manual_seed(0)
w64=w32=wj=0
for name, make in LAYERS.items():
    l = perturb(make(), 0.1).double(); x = torch.randn(5,4,4,4,dtype=torch.float64)*1.5; c = cond_for(l,x)
    y,_ = l(x,c); w64=max(w64,(l.inverse(y,c)[0]-x).abs().max().item())
    l32 = perturb(make(), 0.1); x32=torch.randn(5,4,4,4); c32=cond_for(l32,x32); y,_=l32(x32,c32); w32=max(w32,(l32.inverse(y,c32)[0]-x32).abs().max().item())
    cc = None if c is None else c[:1]
    exp = jacobian_logdet(lambda v: l(v, cc)[0], x[:1]); wj=max(wj,(l(x[:1],cc)[1]-exp).abs().max().item())
print("layers: roundtrip f64", w64, "f32", w32, "logdet-vs-jacobian", wj)
m64=m32=mj=0
flat=lambda zs: torch.cat([z.flatten(1) for z in zs],1)
for cp, pm in itertools.product(COUPLINGS, PERMUTATIONS):
    torch.manual_seed(0)
    m = perturb(Glow((2,8,8),levels=2,steps=2,hidden_channels=16,coupling=cp,permutation=pm,spline_bins=4)).double()
    x = torch.rand(4,2,8,8,dtype=torch.float64)-0.5; zs,_=m.encode(x); m64=max(m64,(m.decode(zs)-x).abs().max().item())
    m=m.float(); x=x.float(); zs,_=m.encode(x); m32=max(m32,(m.decode(zs)-x).abs().max().item())
    mm = perturb(Glow((1,4,4),levels=2,steps=2,hidden_channels=8,coupling=cp,permutation=pm,spline_bins=4)).double()
    x = torch.rand(2,1,4,4,dtype=torch.float64)-0.5
    mj=max(mj,(mm.encode(x)[1]-jacobian_logdet(lambda v: flat(mm.encode(v)[0]), x)).abs().max().item())
print("model (12 coupling x permutation combos): roundtrip f64", m64, "f32", m32, "logdet-vs-jacobian", mj)
