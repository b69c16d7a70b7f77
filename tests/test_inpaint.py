"""Inpainting: observed pixels untouched, completions differ, empty mask is identity, c-Glow exactness,
and the MCMC sampler leaves an analytically known Gaussian conditional invariant."""

from __future__ import annotations

import json
import math

import pytest
import torch

from glow.conditioning import make_condition
from glow import Glow
from glow.flows import ActNorm, FlowSequence, InvConv1x1
from glow.sampling.inpaint import inpaint
from glow.sampling.pixel_mcmc import mala
from glow.masks import MaskSampler, make_mask
from glow.priors import gaussian_log_prob
from tests.helpers import jacobian_logdet, perturb


def gaussian_flow(seed=0):
    torch.manual_seed(seed)
    flow = perturb(FlowSequence([ActNorm(4), InvConv1x1(4)]), scale=0.5, seed=seed).double()
    with torch.no_grad():
        flow.layers[0].loc.copy_(torch.tensor([0.3, -0.2, 0.1, 0.5], dtype=torch.float64).view(1, 4, 1, 1))

    def log_prob(x):
        z, logdet = flow(x)
        return gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z)) + logdet

    # the exact Gaussian: z = A x + c  =>  x ~ N(-A^-1 c, (A^T A)^-1)
    eye = torch.eye(4, dtype=torch.float64).view(4, 4, 1, 1)
    a = torch.stack([flow(eye[i:i + 1].view(1, 4, 1, 1) + 0)[0].flatten() for i in range(4)], 1)
    c = flow(torch.zeros(1, 4, 1, 1, dtype=torch.float64))[0].flatten()
    a = a - c.view(4, 1)
    precision = a.T @ a
    mean = -torch.linalg.solve(a, c)
    return log_prob, mean.detach(), precision.detach()


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_mala_keeps_the_exact_gaussian_conditional(temperature):
    """p^(1/T) of a Gaussian is the Gaussian with T times the covariance, the same mean."""
    log_prob, mean, precision = gaussian_flow()
    missing, observed = [1, 3], [0, 2]
    x_obs = torch.tensor([0.8, -0.4], dtype=torch.float64)
    lam_mm, lam_mo = precision[missing][:, missing], precision[missing][:, observed]
    cond_cov = temperature * torch.linalg.inv(lam_mm)
    cond_mean = mean[missing] - torch.linalg.inv(lam_mm) @ lam_mo @ (x_obs - mean[observed])

    chains = 3000
    x0 = torch.zeros(chains, 4, 1, 1, dtype=torch.float64)
    x0[:, observed, 0, 0] = x_obs
    x0[:, missing, 0, 0] = torch.randn(chains, 2, dtype=torch.float64) * 3  # far from the target
    mask = torch.zeros_like(x0)
    mask[:, missing] = 1
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        samples, acceptance = mala(log_prob, x0, mask, steps=400, step_size=0.3, bounds=None, generator=gen,
                                   temperature=temperature)
    assert torch.equal(samples[:, observed, 0, 0], x0[:, observed, 0, 0])
    xm = samples[:, missing, 0, 0]
    sd = cond_cov.diagonal().sqrt()
    stderr = sd / math.sqrt(chains)
    assert ((xm.mean(0) - cond_mean).abs() < 5 * stderr).all(), (xm.mean(0), cond_mean, stderr)
    assert ((xm.var(0) / cond_cov.diagonal() - 1).abs() < 0.15).all(), (xm.var(0), cond_cov.diagonal())
    empirical_cov = torch.cov(xm.T)
    assert (empirical_cov - cond_cov).abs().max() < 0.15 * cond_cov.abs().max()
    assert 0.3 < acceptance < 0.9


def tiny(conditional=None):
    torch.manual_seed(0)
    return perturb(Glow((1, 8, 8), levels=2, steps=2, hidden_channels=8, conditional=conditional, cond_channels=4),
                   scale=0.05)


@pytest.mark.parametrize("method", ["cglow", "mcmc", "map"])
def test_observed_pixels_unchanged_and_completions_differ(method):
    model = tiny("image" if method == "cglow" else None)
    x = torch.rand(2, 1, 8, 8) - 0.5
    mask = make_mask("center", 2, (8, 8))
    torch.manual_seed(1)
    if method == "cglow":
        result = inpaint(model, x, mask, n=3, method="cglow")
        other = inpaint(model, x, mask, n=3, method="cglow")
    else:
        kw = dict(method=method, steps=20, map_steps=20)
        result = inpaint(model, x, mask, n=3, generator=torch.Generator().manual_seed(1), **kw)
        other = inpaint(model, x, mask, n=3, generator=torch.Generator().manual_seed(2), **kw)
    c = result.completions
    assert c.shape == (2, 3, 1, 8, 8)
    observed = (mask == 0).expand_as(x)
    for k in range(3):
        assert torch.equal(c[:, k][observed], x[observed])
    assert (c - other.completions).abs().max() > 1e-3  # different seeds, different completions
    assert (c[:, 0] - c[:, 1]).abs().max() > 1e-3  # and the n completions of one image differ
    assert torch.isfinite(c).all()


def test_observed_pixels_come_from_the_input_not_the_model():
    """A model whose output is corrupted everywhere: the hole shows the corruption, the observed pixels
    do not (in model space, and as uint8 through completions_uint8)."""
    from glow.quantize import preprocess
    from glow.sampling.inpaint import completions_uint8

    model = tiny("image")
    images = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    x = preprocess(images, 8, dequantize=False)
    mask = make_mask("center", 2, (8, 8))
    model.sample = lambda n, temperature=1.0, cond=None, noise=None: torch.full((n, 1, 8, 8), 0.25)
    result = inpaint(model, x, mask, n=2, method="cglow")
    hole = (mask == 1).expand_as(x).unsqueeze(1).expand_as(result.completions)
    assert (result.completions[hole] == 0.25).all()  # the model's output reached the hole
    assert torch.equal(result.completions[~hole], x.unsqueeze(1).expand_as(result.completions)[~hole])
    filled = completions_uint8(result, images, mask, 8)
    assert (filled[hole] == 192).all()  # 0.25 in model space is pixel (0.25 + 0.5) * 256 = 192
    assert torch.equal(filled[~hole], images.unsqueeze(1).expand_as(filled)[~hole])


def test_empty_mask_returns_the_input():
    x = torch.rand(2, 1, 8, 8) - 0.5
    empty = make_mask("none", 2, (8, 8))
    for result in (inpaint(tiny("image"), x, empty, n=2, method="cglow"),
                   inpaint(tiny(), x, empty, n=2, method="mcmc", steps=3)):
        assert torch.equal(result.completions, x.unsqueeze(1).expand(2, 2, 1, 8, 8))


def test_conditional_glow_is_exact_given_the_condition():
    model = tiny("image").double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64) - 0.5
    cond = make_condition(x, make_mask("pixels", 2, (8, 8)).double())
    zs, logdet = model.encode(x, cond)
    assert (model.decode(zs, cond) - x).abs().max() < 1e-10
    flat = lambda v: torch.cat([z.flatten(1) for z in model.encode(v, cond[:1])[0]], 1)  # noqa: E731
    assert torch.allclose(logdet[:1], jacobian_logdet(flat, x[:1]), atol=1e-8)


def test_mask_kinds_and_sampler():
    for kind in ("center", "boxes", "half", "left", "right", "top", "bottom", "pixels"):
        m = make_mask(kind, 4, (8, 8), generator=torch.Generator().manual_seed(0))
        assert m.shape == (4, 1, 8, 8) and 0 < m.mean() < 1
    assert make_mask("center", 1, (32, 32), center_fraction=14 / 32).sum() == 14 * 14
    mix = MaskSampler({"center": 1.0, "pixels": 1.0})(16, (8, 8))
    assert mix.shape == (16, 1, 8, 8)
    with pytest.raises(ValueError, match="mask='star' is not allowed"):
        make_mask("star", 1, (8, 8))


def _evaluate_inpainting(tmp_path, ckpt, overrides):
    import importlib.util

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import CONF, REPO

    spec = importlib.util.spec_from_file_location("evaluate_inpainting", REPO / "scripts" / "evaluate_inpainting.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    GlobalHydra.instance().clear()
    out = tmp_path / "eval"
    out.mkdir(exist_ok=True)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="evaluate_inpainting",
                      overrides=[f"ckpt_path={ckpt}", f"paths.output_dir={out}", "data.num_workers=0"] + overrides)
    return script.evaluate(cfg), out


@pytest.mark.slow
@pytest.mark.parametrize("route", ["cglow", "latent"])
def test_inpainting_end_to_end_from_a_trained_checkpoint(tmp_path, synthetic_folder, route):
    import train
    from tests.conftest import compose_train

    data = ["data=imagefolder", f"data.path={synthetic_folder}", "data.image_size=16"]
    extra = ["model.conditional=image", "model.cond_channels=8", "model.cond_encoder=unet",
             "model.conditional_layers=true", "model.observed_noise=uniform",
             "model.hole_predictor=true"] if route == "cglow" else []
    trained = train.run(compose_train(tmp_path / "run", data + extra + ["trainer.max_steps=6"]))  # not beside the images
    methods = "method=cglow" if route == "cglow" else "method=[latent,mcmc]"  # one results file for both
    results, out = _evaluate_inpainting(tmp_path, trained["last_checkpoint"],
                                        data + ["n_images=4", "n=3", "mcmc_steps=10", "mask_size=6", "batch_size=2",
                                                methods, "val_images=2", "temperature_grid=[0.5,1.0]",
                                                "gaussian_fit_images=8", f"json={tmp_path / 'results.json'}"])
    assert json.loads((tmp_path / "results.json").read_text()) == results
    routes = [route] if route == "cglow" else ["latent", "mcmc"]
    assert list(results["routes"]) == routes and results["hole_pixels"] == 36
    for name in routes + ["mean_fill", "nearest_neighbour"]:
        figures = results["routes"].get(name) or results["baselines"][name]
        assert figures["observed_max_abs_change"] == 0, name
        for key in ("psnr_mean_completion", "psnr_best_of_n", "ssim_mean_completion", "diversity"):
            assert math.isfinite(figures[key]), (name, key)
    for name in routes:
        assert results["routes"][name]["diversity"] > 0
        assert (out / f"inpainting_{name}.png").is_file()
    if route == "cglow":
        cglow, gaussian = results["routes"]["cglow"], results["baselines"]["gaussian_residual"]
        for figures in (cglow, gaussian):
            assert math.isfinite(figures["hole_bpd"]) and figures["hole_bpd_is"].startswith("upper bound")
        assert gaussian["observed_max_abs_change"] == 0
        assert cglow["temperature_chosen_on"].startswith("validation")
        chosen = max(cglow["validation_by_temperature"].items(), key=lambda kv: kv[1]["psnr_best_of_n"])[0]
        assert float(chosen) == cglow["temperature"]
    else:
        assert 0 <= results["routes"]["latent"]["acceptance_rate"] <= 1
        assert "ess_per_chain" in results["routes"]["latent"]
        assert 0 <= results["routes"]["mcmc"]["acceptance_rate"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("route", ["cglow", "latent"])
def test_sample_py_inpaint_task(tmp_path, synthetic_folder, route):
    """python sample.py task=inpaint: one row per image of original | masked | n completions, observed pixels exact."""
    import numpy as np
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from PIL import Image

    import sample
    import train
    from tests.conftest import CONF, compose_train

    data = ["data=imagefolder", f"data.path={synthetic_folder}", "data.image_size=16"]
    extra = ["model.conditional=image", "model.cond_channels=8"] if route == "cglow" else []
    trained = train.run(compose_train(tmp_path / "train", data + extra + ["trainer.max_steps=4"]))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="sample", overrides=data + [
            f"ckpt_path={trained['last_checkpoint']}", f"paths.output_dir={tmp_path / 'out'}", "task=inpaint",
            "mask=center", "mask_size=6", "n=3", "inpaint_images=2", "mcmc_steps=5", "data.num_workers=0"])
    result = sample.run(cfg)
    assert (result["rows"], result["cols"]) == (2, 5) and route in result["summary"]
    grid = np.asarray(Image.open(result["path"]).convert("RGB"))
    assert grid.shape == (2 * 17 + 1, 5 * 17 + 1, 3)
    tiles = [[grid[1 + r * 17: 1 + r * 17 + 16, 1 + c * 17: 1 + c * 17 + 16] for c in range(5)] for r in range(2)]
    hole = np.zeros((16, 16), bool)
    hole[5:11, 5:11] = True
    for row in tiles:
        for completion in row[2:]:
            assert np.array_equal(completion[~hole], row[0][~hole])  # observed pixels bit-exact
        assert (row[1][hole] == 128).all()  # the masked image shows the hole grey


@pytest.mark.slow
def test_sample_py_inpaint_with_a_user_mask_png_keeps_the_users_observed_pixels(tmp_path, synthetic_folder):
    """python sample.py task=inpaint images=[a.png] mask_image=m.png: a 20x12 photo for a 16x16 model;
    completions written at 20x12, every observed pixel of the file unchanged, the hole filled."""
    import numpy as np
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from PIL import Image

    import sample
    import train
    from tests.conftest import CONF, compose_train

    data = ["data=imagefolder", f"data.path={synthetic_folder}", "data.image_size=16"]
    trained = train.run(compose_train(tmp_path / "train", data + ["model.conditional=image", "model.cond_channels=8",
                                                                  "trainer.max_steps=4"]))
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)  # H=12, W=20
    Image.fromarray(photo).save(tmp_path / "a.png")
    hole = np.zeros((12, 20), bool)
    hole[3:8, 5:14] = True
    Image.fromarray((hole * 255).astype(np.uint8)).save(tmp_path / "m.png")
    out = tmp_path / "out"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="sample", overrides=data + [
            f"ckpt_path={trained['last_checkpoint']}", f"paths.output_dir={out}", "task=inpaint", "n=3",
            f"images=[{tmp_path / 'a.png'}]", f"mask_image={tmp_path / 'm.png'}", "data.num_workers=0"])
    result = sample.run(cfg)
    assert (result["rows"], result["cols"]) == (1, 5)
    completions = [np.asarray(Image.open(out / f"inpaint_a_{k}.png")) for k in range(3)]
    for completion in completions:
        assert completion.shape == photo.shape
        assert np.array_equal(completion[~hole], photo[~hole])  # the user's observed pixels, unchanged
    assert any(not np.array_equal(c[hole], photo[hole]) for c in completions)  # the hole was filled


def test_user_mask_pad_round_trip_and_bad_mask_size(tmp_path):
    """A 28x28 digit for a 32x32 model that pads: padded in, cropped out; observed pixels untouched."""
    from PIL import Image

    from glow.sampling.user_mask import read_mask, to_model_size, to_original_size

    image = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    mask = torch.zeros(1, 28, 28, dtype=torch.bool)
    mask[:, 7:21, 7:21] = True
    x, m = to_model_size(image, mask, (32, 32), pad=True)
    assert x.shape == (1, 32, 32) and m.sum() == 14 * 14 and torch.equal(x[:, 2:30, 2:30], image)
    fake = torch.full((2, 1, 32, 32), 77, dtype=torch.uint8)
    back = to_original_size(fake, image, mask, pad=True)
    assert back.shape == (2, 1, 28, 28)
    assert torch.equal(back[:, ~mask], image[~mask].expand(2, -1)) and (back[:, mask] == 77).all()
    Image.fromarray(torch.zeros(10, 12, dtype=torch.uint8).numpy()).save(tmp_path / "m.png")
    with pytest.raises(ValueError, match="give a mask of the image's size"):
        read_mask(str(tmp_path / "m.png"), (28, 28))


@pytest.mark.slow
def test_short_cglow_run_beats_mean_fill_on_64_mnist_test_images(tmp_path, mnist_root):
    """Issue 11: a c-Glow trained briefly on the real MNIST (a small flow, the experiment's hole predictor
    and mask mix) completes the 14x14 centre hole of 64 test images better than the training mean."""
    import train
    from tests.conftest import compose_train

    data = [f"data.root={mnist_root}"]
    small = ["experiment=inpaint_mnist", "model.levels=2", "model.steps=2", "model.hidden_channels=16",
             "model.cond_channels=16", "data.batch_size=64", "data.limit_train=null", "module.warmup_steps=20",
             "trainer.max_steps=200", "trainer.max_time=null",
             "+trainer.limit_test_batches=1", "trainer.limit_val_batches=1"]
    trained = train.run(compose_train(tmp_path, data + small))
    results, _ = _evaluate_inpainting(tmp_path, trained["last_checkpoint"],
                                      data + ["n_images=64", "val_images=32", "method=cglow", "mask_size=14"])
    cglow, baselines = results["routes"]["cglow"], results["baselines"]
    assert cglow["observed_max_abs_change"] == 0
    assert cglow["psnr_mean_completion"] > baselines["mean_fill"]["psnr_mean_completion"], results
