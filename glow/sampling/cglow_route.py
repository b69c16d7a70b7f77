"""The c-Glow inpainting route (Lu & Huang 2020): a model trained with ``conditional=image`` models
p(x | x_obs, mask) directly, so a completion is one ancestral sample at temperature T."""

from __future__ import annotations

import torch
from torch import Tensor

from glow.conditioning import make_condition
from glow.density import DensityModel
from glow.sampling.inpaint_result import InpaintOptions, InpaintResult, as_result, repeat_rows


@torch.no_grad()
def cglow_route(model: DensityModel, x: Tensor, mask: Tensor, n: int, options: InpaintOptions) -> InpaintResult:
    """n completions per image: x ~ p(x | x_obs, mask) at ``options.temperature``. A c-Glow with a mixture
    over hole hypotheses (glow.hole_mixture) draws each completion's component k ~ pi(c), stratified
    over an image's n completions: each is still an exact draw, and together they repeat less."""
    x_rep, m_rep = repeat_rows(x, mask, n)
    cond = make_condition(x_rep, m_rep[:, :1])
    if model.capabilities.hole_predictor:
        noise = [torch.randn(x_rep.shape[0], *shape).to(x.device) for shape in model.latent_shapes]
        components = model.sample_components(cond, options.generator, group=n)
        samples = model.decode_noise(noise, options.temperature, cond, component=components)
    else:
        samples = model.sample(x_rep.shape[0], temperature=options.temperature, cond=cond)
    return as_result(samples.clamp(-0.5, 0.5), x_rep, m_rep, x, n, "cglow")
