"""The inpainting benchmark's figures against hand computations: the Gaussian-residual baseline's bits,
the energy score, the digit classifier's agreement, and a c-Glow's hole bits/dim."""

from __future__ import annotations

import math

import pytest
import torch

from glow import Glow
from glow.conditioning import make_condition
from glow.digit_classifier import DigitClassifier, agreement, load_classifier, save_classifier, train_classifier
from glow.errors import CheckpointError
from glow.exactness import perturb
from glow.masks import make_mask
from glow.quantize import preprocess
from glow.sampling.gaussian_residual import GaussianResidual, fit_gaussian_residual
from glow.sampling.hole_likelihood import dequantised, model_hole_bpd
from glow.sampling.inpaint_scores import choose_by_best_of_n, energy_score, pairwise_distance, score


def test_gaussian_residual_bits_match_a_hand_computation():
    """Two hole pixels, two bins: each pixel's truncated normal log-density written out with math.erf."""
    model = GaussianResidual(edges=torch.tensor([0.0]), offset=torch.tensor([[[[0.01, -0.02]]], [[[0.03, 0.0]]]]),
                             scale=torch.tensor([[[[0.1, 0.2]]], [[[0.3, 0.05]]]]), truncate=True)
    mu = torch.tensor([[[[-0.2, 0.1]]]])   # pixel 0 in bin 0, pixel 1 in bin 1
    x = torch.tensor([[[[-0.25, 0.12]]]])
    hole = torch.ones(1, 1, 1, 2)

    def log_q(value, mean, std, truncate=True):
        cdf = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
        mass = cdf((0.5 - mean) / std) - cdf((-0.5 - mean) / std) if truncate else 1.0
        return -0.5 * ((value - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi) - math.log(mass)

    nats = -(log_q(-0.25, -0.2 + 0.01, 0.1) + log_q(0.12, 0.1 + 0.0, 0.05))
    expected = nats / (2 * math.log(2)) + 8
    assert model.hole_bpd(x, mu, hole, 8).item() == pytest.approx(expected, rel=1e-6)
    model.truncate = False
    nats = -(log_q(-0.25, -0.19, 0.1, False) + log_q(0.12, 0.1, 0.05, False))
    assert model.hole_bpd(x, mu, hole, 8).item() == pytest.approx(nats / (2 * math.log(2)) + 8, rel=1e-6)
    assert model.hole_bpd(x, mu, hole, 8).item() > expected  # truncation renormalises: fewer bits


def test_fitted_gaussian_residual_recovers_offsets_and_scales_per_context():
    gen = torch.Generator().manual_seed(0)
    n = 20000
    mu = (torch.rand(n, 1, 1, 1, generator=gen) < 0.5).float() * 0.5 - 0.25  # -0.25 or 0.25
    low = mu < 0  # two contexts: narrow residuals below 0, wide above
    residual = torch.where(low, 0.02 + 0.01 * torch.randn(n, 1, 1, 1, generator=gen),
                           -0.05 + 0.1 * torch.randn(n, 1, 1, 1, generator=gen))
    fitted = fit_gaussian_residual(mu + residual, mu, torch.ones(n, 1, 1, 1), bins=2)
    assert -0.25 <= fitted.edges.item() < 0.25  # the two values of mu fall in different bins
    assert torch.allclose(fitted.offset.flatten(), torch.tensor([0.02, -0.05]), atol=0.005)
    assert torch.allclose(fitted.scale.flatten(), torch.tensor([0.01, 0.1]), rtol=0.05)
    per_pixel = fit_gaussian_residual(mu + residual, mu, torch.ones(n, 1, 1, 1), bins=1)
    hole = torch.ones(n, 1, 1, 1)
    assert fitted.hole_bpd(mu + residual, mu, hole, 8).mean() < per_pixel.hole_bpd(mu + residual, mu, hole, 8).mean()


def test_energy_score_by_hand_and_it_prefers_the_true_spread():
    target = torch.zeros(1, 1, 1, 2)
    comp = torch.tensor([[[[[0.3, 0.4]]], [[[0.0, 0.0]]]]])  # two completions: 0.5 and 0 from the truth
    hole = torch.ones(1, 1, 1, 2)
    assert pairwise_distance(comp, hole).item() == pytest.approx(0.5)
    assert energy_score(comp, target, hole).item() == pytest.approx((0.5 + 0.0) / 2 - 0.25)
    gen = torch.Generator().manual_seed(0)  # truth ~ N(0, 1); completions ~ N(0, s^2): s = 1 scores best
    truth = torch.randn(4000, 1, 1, 3, generator=gen)
    scores = {s: energy_score(s * torch.randn(4000, 8, 1, 1, 3, generator=gen), truth, torch.ones(1, 1, 1, 3))
              .mean().item() for s in (0.0, 0.5, 1.0, 2.0)}
    assert min(scores, key=scores.get) == 1.0, scores
    assert choose_by_best_of_n({"0.5": {"psnr_best_of_n": 12.0}, "1.0": {"psnr_best_of_n": 11.5}}) == "0.5"


def test_score_of_uint8_completions():
    test = torch.full((1, 1, 16, 16), 100, dtype=torch.uint8)  # (SSIM needs more than its 11x11 window)
    hole = torch.zeros(1, 1, 16, 16)
    hole[0, 0, 0, 0] = 1
    comps = test.unsqueeze(1).repeat(1, 2, 1, 1, 1)
    comps[0, 0, 0, 0, 0], comps[0, 1, 0, 0, 0] = 100 + 51, 100  # one exact, one off by 0.2
    figures = score(comps, test, hole)
    assert figures["observed_max_abs_change"] == 0
    assert figures["psnr_best_of_n"] == pytest.approx(100.0)  # the exact one (MSE floor 1e-10)
    assert figures["psnr_mean_completion"] == pytest.approx(-10 * math.log10((0.1) ** 2), abs=1e-4)
    assert figures["diversity"] == pytest.approx(0.2, abs=1e-6)


def test_classifier_agreement_by_hand():
    classes = torch.tensor([[1, 1, 2, 3], [0, 0, 0, 0]])
    figures = agreement(classes, torch.tensor([1, 5]), mean_classes=torch.tensor([1, 0]))
    assert figures["classifier_agreement"] == pytest.approx(2 / 8)
    assert figures["classes_per_image"] == pytest.approx((3 + 1) / 2)
    assert figures["classifier_agreement_mean"] == pytest.approx(0.5)


def test_digit_classifier_learns_and_round_trips_its_file(tmp_path):
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (256,), generator=gen)
    images = torch.zeros(256, 1, 8, 8, dtype=torch.uint8)
    images[labels == 0, :, :, :4] = 255  # class 0: left half lit; class 1: right half
    images[labels == 1, :, :, 4:] = 255
    model = train_classifier(images, labels, steps=60, batch_size=32)
    assert (model.predict(images) == labels).float().mean() > 0.95
    save_classifier(model, tmp_path / "c.pt", 0.99)
    loaded, acc = load_classifier(tmp_path / "c.pt")
    assert acc == 0.99 and torch.equal(loaded.predict(images), model.predict(images))
    assert loaded.predict(images.view(4, 64, 1, 8, 8)).shape == (4, 64)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="is not a digit classifier"):
        load_classifier(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_classifier(tmp_path / "junk.pt")
    assert isinstance(DigitClassifier(), torch.nn.Module)


def test_cglow_hole_bits_are_its_log_prob_over_the_missing_dims():
    torch.manual_seed(0)
    model = perturb(Glow((1, 8, 8), levels=2, steps=1, hidden_channels=8, conditional="image", cond_channels=4,
                         cond_encoder="unet", observed_noise="uniform", hole_predictor=True), 0.05).eval()
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    mask = make_mask("center", 3, (8, 8))
    x = dequantised(images, 8, seed=1)
    assert torch.equal(x, dequantised(images, 8, seed=1)) and ((x + 0.5) * 256).floor().eq(images.float()).all()
    with torch.no_grad():
        log_p = model.log_prob(x, make_condition(preprocess(images, 8, dequantize=False), mask))
    expected = (-log_p + 64 * 8 * math.log(2)) / (16 * math.log(2))  # 16 missing dims
    assert torch.allclose(model_hole_bpd(model, x, images, mask).float(), expected, rtol=1e-5)
