"""Glow, RealNVP and NICE normalizing flows with exact log-likelihoods, and the other families
(VAE, MAF, IAF, distillation) behind one interface, glow.density.DensityModel.

    import glow
    model = glow.load("outputs/mnist/<run>/checkpoints/last.ckpt")   # any family, EMA weights if any
    images = model.sample(16, temperature=0.7)
"""

from glow.density import Capabilities, DensityModel
from glow.model import Glow
from glow.sampling.load import load

__all__ = ["Capabilities", "DensityModel", "Glow", "load"]
