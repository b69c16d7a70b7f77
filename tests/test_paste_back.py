"""Observed pixels in inpainting, in two separate parts so that a bug in either shows:

* the paste-back itself (glow.sampling.inpaint_result.as_result, glow.sampling.inpaint.completions_uint8)
  on hand-made tensors: the hole from the completion, everything else from the input, bit-exact;
* what each route's MODEL produces before any paste-back (a spy on as_result, or on decode_noise):
  its output reaches the hole, and where the route itself pins or fits the observed pixels (MALA pins
  them, the c-Glow's observed-noise layer maps them into their bins, the latent sampler fits them),
  the model's own output there is the input."""

from __future__ import annotations

import pytest
import torch

from glow import Glow
from glow.exactness import perturb
from glow.masks import make_mask
from glow.quantize import preprocess, to_uint8
from glow.sampling import cglow_route, latent, pixel_mcmc
from glow.sampling.inpaint import completions_uint8, inpaint
from glow.sampling.inpaint_result import as_result, broadcast_mask, repeat_rows


# -- the paste-back on hand-made tensors -------------------------------------------------------------------
def test_repeat_rows_is_image_major_and_masks_broadcast_to_the_image():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    hole = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 1]]], dtype=torch.float32)  # [B, H, W]
    for mask in (hole, hole[:, None], hole[:, None].expand(2, 3, 2, 2)):
        full = broadcast_mask(mask, x)
        assert full.shape == x.shape and full.dtype == x.dtype
        assert torch.equal(full, hole[:, None].expand(2, 3, 2, 2))
    x_rep, m_rep = repeat_rows(x, hole, 3)
    for row in range(6):
        assert torch.equal(x_rep[row], x[row // 3]) and torch.equal(m_rep[row], hole[row // 3].expand(3, 2, 2))


def test_as_result_takes_the_hole_from_the_completion_and_the_rest_from_the_input():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 4, 4, generator=gen) - 0.5
    mask = (torch.rand(2, 1, 4, 4, generator=gen) < 0.4).float()
    x_rep, m_rep = repeat_rows(x, mask, 3)
    filled = 10 + torch.arange(x_rep.numel(), dtype=torch.float32).view_as(x_rep)  # every value distinct
    result = as_result(filled, x_rep, m_rep, x, 3, "test", 0.5, {"k": 1})
    assert result.completions.shape == (2, 3, 3, 4, 4) and result.method == "test"
    assert result.acceptance_rate == 0.5 and result.stats == {"k": 1}
    for b in range(2):
        hole = mask[b].bool().expand(3, 4, 4)
        for k in range(3):
            c = result.completions[b, k]
            assert torch.equal(c[hole], filled[3 * b + k][hole]) and torch.equal(c[~hole], x[b][~hole])


class SimpleResult:
    def __init__(self, completions):
        self.completions = completions


@pytest.mark.parametrize("n_bits", [8, 5])
def test_completions_uint8_copies_observed_pixels_bit_exactly(n_bits):
    """The observed pixels are the input's uint8 values, low bits included (even at 5 bits), whatever
    the completion holds there; the hole is the completion's bin."""
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 4, 4), generator=gen, dtype=torch.uint8)
    mask = (torch.rand(2, 1, 4, 4, generator=gen) < 0.5).float()
    completions = torch.rand(2, 3, 3, 4, 4, generator=gen) - 0.5  # wrong everywhere on purpose
    out = completions_uint8(SimpleResult(completions), images, mask, n_bits)
    assert out.shape == (2, 3, 3, 4, 4) and out.dtype == torch.uint8
    hole = mask.bool().expand(2, 3, 4, 4)
    expected_hole = to_uint8(completions, n_bits)
    for k in range(3):
        assert torch.equal(out[:, k][~hole], images[~hole])
        assert torch.equal(out[:, k][hole], expected_hole[:, k][hole])
    assert (images[~hole] % 8 != 0).any()  # low bits really were there to lose


# -- the routes: the model's own output, before any paste-back ------------------------------------------
def spy_on_as_result(monkeypatch, module) -> list[torch.Tensor]:
    """Record what a route hands to as_result: its completions before the observed pixels are pasted."""
    raw, original = [], module.as_result

    def recording(filled, *args, **kwargs):
        raw.append(filled.detach().clone())
        return original(filled, *args, **kwargs)

    monkeypatch.setattr(module, "as_result", recording)
    return raw


def tiny(**kw):
    torch.manual_seed(0)
    return perturb(Glow((1, 8, 8), levels=2, steps=2, hidden_channels=8, **kw), 0.05)


def images_and_hole():
    images = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    return images, preprocess(images, 8, dequantize=False), make_mask("center", 2, (8, 8))


@pytest.mark.parametrize("route,module", [("cglow", cglow_route), ("mcmc", pixel_mcmc), ("map", pixel_mcmc),
                                          ("latent", latent)])
def test_every_routes_model_output_reaches_the_hole_and_only_the_hole(monkeypatch, route, module):
    model = tiny(conditional="image", cond_channels=4) if route == "cglow" else tiny()
    _, x, mask = images_and_hole()
    raw = spy_on_as_result(monkeypatch, module)
    torch.manual_seed(3)
    result = inpaint(model, x, mask, n=3, method=route, steps=6, map_steps=6, generator=torch.Generator().manual_seed(3))
    (filled,) = raw
    filled = filled.view(2, 3, 1, 8, 8)
    hole = mask.bool().expand(2, 1, 8, 8).unsqueeze(1).expand(2, 3, 1, 8, 8)
    assert torch.equal(result.completions[hole], filled[hole])
    assert torch.equal(result.completions[~hole], x.unsqueeze(1).expand(2, 3, 1, 8, 8)[~hole])
    assert (filled[hole] - x.unsqueeze(1).expand_as(filled)[hole]).abs().max() > 1e-3  # the model did fill it


def test_pixel_mcmc_leaves_the_observed_pixels_where_they_are(monkeypatch):
    """MALA moves only the missing coordinates: its chains' observed pixels ARE the input, before any paste."""
    _, x, mask = images_and_hole()
    raw = spy_on_as_result(monkeypatch, pixel_mcmc)
    inpaint(tiny(), x, mask, n=2, method="mcmc", steps=10, generator=torch.Generator().manual_seed(4))
    observed = (mask == 0).expand(2, 1, 8, 8).repeat_interleave(2, 0)
    assert torch.equal(raw[0][observed], x.repeat_interleave(2, 0)[observed])


@pytest.mark.parametrize("observed_noise,temperature", [("gaussian", 0.5), (True, 0.0)])
def test_cglow_samples_put_the_observed_pixels_in_their_bins(monkeypatch, observed_noise, temperature):
    """A c-Glow with the observed-noise layer samples observed pixels inside their own bins: its raw
    samples, before the paste-back, already show the input there (gaussian: for any latent within
    about 3.7 sd; uniform: for latents in [-0.5, 0.5), as at T=0 for this model)."""
    model = tiny(conditional="image", cond_channels=4, cond_encoder="unet", conditional_layers=True,
                 observed_noise=observed_noise)
    images, x, mask = images_and_hole()
    raw = spy_on_as_result(monkeypatch, cglow_route)
    torch.manual_seed(5)
    inpaint(model, x, mask, n=3, method="cglow", temperature=temperature)
    samples = to_uint8(raw[0], 8).view(2, 3, 1, 8, 8)
    observed = (mask == 0).expand(2, 1, 8, 8).unsqueeze(1).expand_as(samples)
    expected = images.unsqueeze(1).expand_as(samples)
    assert (samples[observed] == expected[observed]).float().mean() >= 0.99
    assert (samples[observed].int() - expected[observed].int()).abs().max() <= 1
    assert not torch.equal(samples[~observed], expected[~observed])


def test_latent_sampler_fits_the_observed_pixels_with_the_model():
    """The latent route's G(eps) (the model's image of its final draws, recorded before the paste-back)
    matches the input's observed pixels to the target's observation noise sigma = 0.05 (an exact draw has
    mean |error| = sigma sqrt(2/pi) = 0.04 there), after the default steps; the model's unconditioned samples miss by 0.46 here."""
    model = tiny().eval()
    images, x, mask = images_and_hole()
    decoded, original = [], model.decode_noise

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        decoded.append(out.detach())
        return out

    model.decode_noise = recording
    result = inpaint(model, x, mask, n=3, method="latent", generator=torch.Generator().manual_seed(0))
    g = decoded[-1].clamp(-0.5, 0.5).view(2, 3, 1, 8, 8)
    observed = (mask == 0).expand(2, 1, 8, 8).unsqueeze(1).expand_as(g)
    error = (g - x.unsqueeze(1).expand_as(g))[observed].abs()
    assert error.mean() < 0.05 and result.stats["obs_rmse"] < 0.075, (error.mean(), result.stats["obs_rmse"])
    hole = ~observed
    assert torch.equal(result.completions[hole], g[hole])
