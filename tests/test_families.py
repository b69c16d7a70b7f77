"""The model families beside Glow (glow.families): the VAE's bound, the distillation loss, and each
family through the one training loop (train.py), checkpoint rebuild and sample.py."""

from __future__ import annotations

import json
import math

import pytest
import torch

import glow
import sample as sample_entry
import train
from glow.autoregressive import IAFModel, MAFModel
from glow.distill import distillation_loss
from glow.exactness import perturb
from glow.vae import VAE, binarize
from tests.conftest import compose_train

SMALL = ["data.image_size=8", "data.resize=resize"]  # 64-dimensional vectors: sequential passes stay cheap


def run(tmp_path, overrides):
    return train.run(compose_train(tmp_path, overrides, debug="vector"))


def sample_py(ckpt, out, overrides=()):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import CONF

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="sample", overrides=[f"ckpt_path={ckpt}", f"paths.output_dir={out}", "device=cpu",
                                                       *overrides])
    return sample_entry.run(cfg)


INPAINT = ["task=inpaint", "data.image_size=8", "data.resize=resize", "mask_size=4", "inpaint_images=2", "n=2",
           "mcmc_steps=3", "map_steps=3"]


def images(n=6, seed=0):
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("posterior", ["iaf", "planar"])
def test_elbo_with_an_identity_posterior_flow_equals_the_plain_vae(posterior):
    """Same encoder/decoder weights, the same noise: an identity flow must not change the bound."""
    plain = VAE((1, 8, 8), "none", latent_dim=4, hidden=16)
    flowed = VAE((1, 8, 8), posterior, latent_dim=4, hidden=16, flow_length=3, iaf_hidden=8)
    missing, _ = flowed.load_state_dict(plain.state_dict(), strict=False)
    assert not missing or all(k.startswith("flow.") for k in missing)
    if posterior == "planar":  # zero amortisation heads: u = w = b = 0, f(z) = z
        for layer in flowed.flow.layers:
            torch.nn.init.zeros_(layer.source.head.weight)
            torch.nn.init.zeros_(layer.source.head.bias)
    x = binarize(images(), torch.Generator().manual_seed(1))
    a = plain.neg_elbo(x, torch.Generator().manual_seed(2))
    b = flowed.neg_elbo(x, torch.Generator().manual_seed(2))
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    perturb(flowed.flow, 0.3)  # and a flow that moves z changes it: the check above could fail
    assert not torch.allclose(a, flowed.neg_elbo(x, torch.Generator().manual_seed(2)), atol=1e-3, rtol=0)


def test_importance_weighted_bound_is_tighter_than_the_elbo():
    torch.manual_seed(0)
    vae = VAE((1, 8, 8), "radial", latent_dim=4, hidden=16, flow_length=2)
    x = binarize(images(32), torch.Generator().manual_seed(1))
    neg_elbo = torch.stack([vae.neg_elbo(x) for _ in range(200)]).mean(0)
    nll_1 = torch.stack([vae.nll_iw(x, 1) for _ in range(200)]).mean(0)
    nll_64 = vae.nll_iw(x, 64)
    assert (nll_1 - neg_elbo).abs().mean() < 0.05 * neg_elbo.abs().mean()  # k=1 is the ELBO
    assert (nll_64 < neg_elbo).float().mean() > 0.9


@pytest.mark.parametrize("cls", [IAFModel, MAFModel])
def test_distillation_loss_is_zero_when_student_equals_teacher(cls):
    """log q from the sampling pass against log p from the density pass of the same model: 0 up to
    float error for every sample (so also in expectation), while a different teacher gives a positive KL."""
    student = perturb(cls((1, 4, 4), num_layers=3, hidden=24), 0.05, seed=1).double()
    loss = distillation_loss(student, student, 256, torch.Generator().manual_seed(0))
    assert loss.abs().max() < 1e-8
    other = perturb(MAFModel((1, 4, 4), num_layers=3, hidden=24), 0.05, seed=2).double()
    kl = distillation_loss(student, other, 4096, torch.Generator().manual_seed(0))
    assert kl.mean() > 5 * kl.std() / math.sqrt(kl.numel())  # positive beyond MC error


@pytest.mark.slow
def test_vae_trains_tests_and_samples(tmp_path, mnist_root, capsys):
    results = run(tmp_path, ["experiment=vae_mnist", "model.posterior=sylvester_h", "model.flow_length=2",
                             "model.latent_dim=8", "model.hidden=32", "eval.iw_samples=8", *SMALL])
    on_disk = json.loads((tmp_path / "results.json").read_text())
    for key in ("test_neg_elbo", "test_nll_iw", "test_nll_iw_bpd", "test_bpd"):
        assert math.isfinite(on_disk[key]), key
    assert on_disk["test_nll_iw"] < on_disk["test_neg_elbo"] + 1.0
    assert abs(on_disk["test_bpd"] - on_disk["test_neg_elbo"] / (64 * math.log(2))) < 1e-4
    model = glow.load(tmp_path / "checkpoints" / "last.ckpt")
    assert isinstance(model, VAE) and model.posterior == "sylvester_h"
    assert results["test_images"] == 128
    # a VAE has no inpainting route: sample.py says so in one line (it used to crash on a missing attribute)
    with pytest.raises(SystemExit) as exit_info:
        sample_py(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "s", INPAINT)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("config error: task='inpaint' is not allowed: this checkpoint's model has no "
                              "inpainting route"), err


@pytest.mark.slow
def test_maf_then_distillation_end_to_end(tmp_path, mnist_root, capsys):
    teacher = run(tmp_path / "maf", ["experiment=maf_mnist", "model.num_layers=2", "model.hidden=32", *SMALL])
    assert math.isfinite(teacher["test_bpd"])
    ckpt = tmp_path / "maf" / "checkpoints" / "last.ckpt"
    # a MAF inpaints through the route its capabilities name (pixel MCMC on its one-pass density)
    inpainted = sample_py(ckpt, tmp_path / "inpaint", INPAINT)
    assert "(mcmc, mask=center" in inpainted["summary"] and inpainted["nonfinite"] == 0
    with pytest.raises(SystemExit):  # and a route it does not have is one line naming the ones it has
        sample_py(ckpt, tmp_path / "inpaint", [*INPAINT, "method=latent"])
    assert "supports mcmc, map: use auto or one of them" in capsys.readouterr().err.strip().splitlines()[-1]
    out = run(tmp_path / "distill", ["experiment=distill_mnist", f"teacher_ckpt={ckpt}", "trainer.limit_test_batches=1",
                                     *SMALL])
    for key in ("student_bpd", "teacher_bpd", "kl_estimate", "sampling_speedup"):
        assert math.isfinite(out[key]), key
    # the teacher figure is the teacher checkpoint's own density on the same images: it must match
    # the MAF run's figure on its first test batch up to dequantisation noise
    assert abs(out["teacher_bpd"] - teacher["test_bpd"]) < 0.5
    assert out["sampling_speedup"] > 1
    result = sample_py(tmp_path / "distill" / "checkpoints" / "last.ckpt", tmp_path / "s", ["n=4"])
    assert result["count"] == 4 and "ms per image" in result["summary"]


def test_distillation_without_a_teacher_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, ["experiment=distill_mnist", *SMALL])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("config error: teacher_ckpt=None is not allowed")


@pytest.mark.parametrize("override,key", [("model.posterior=flowy", "model.posterior"),
                                          ("model.flow_length=-1", "model.flow_length"),
                                          ("model.centered_flow=maybe", "model.centered_flow"),
                                          ("+model.levels=3", "model.levels")])
def test_bad_vae_config_is_one_line(tmp_path, capsys, override, key):
    with pytest.raises(SystemExit):
        run(tmp_path, ["experiment=vae_mnist", override])
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"config error: {key}=")


def test_kl_weight_scales_only_the_kl_part_of_the_bound():
    """β = 1 is the -ELBO; β = 0 leaves -log p(x | z) of the same posterior sample; the loss is linear in β."""
    torch.manual_seed(0)
    vae = perturb(VAE((1, 8, 8), "planar", latent_dim=4, hidden=16, flow_length=2), 0.1)
    x = binarize(images(), torch.Generator().manual_seed(1))
    loss = {beta: vae.neg_elbo(x, torch.Generator().manual_seed(2), kl_weight=beta) for beta in (0.0, 0.5, 1.0)}
    assert torch.equal(loss[1.0], vae.neg_elbo(x, torch.Generator().manual_seed(2)))
    z, log_q = vae.posterior_sample(x, 1, torch.Generator().manual_seed(2))
    log_px, log_pz = vae.log_likelihood_and_prior(x, z)
    assert torch.allclose(loss[0.0], -log_px[:, 0], atol=1e-5, rtol=0)
    assert torch.allclose(loss[1.0] - loss[0.0], (log_q - log_pz)[:, 0], atol=1e-4, rtol=0)
    assert torch.allclose(loss[0.5], (loss[0.0] + loss[1.0]) / 2, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_kl_warmup_ramps_the_weight_during_training(tmp_path, mnist_root):
    results = run(tmp_path, ["experiment=vae_mnist", "model.posterior=planar", "model.flow_length=1",
                             "model.latent_dim=4", "model.hidden=16", "eval.iw_samples=2", "module.kl_warmup_steps=4",
                             "trainer.max_steps=6", "logger=csv", "trainer.log_every_n_steps=1", *SMALL])
    assert math.isfinite(results["test_neg_elbo"])
    import csv
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    weights = [float(r["train/kl_weight"]) for r in rows if r.get("train/kl_weight")]
    assert weights[:5] == [0.25, 0.5, 0.75, 1.0, 1.0], weights


@pytest.mark.parametrize("overrides", [["experiment=vae_mnist", "module.kl_warmup_steps=-1"],
                                       ["experiment=vae_mnist", "module.kl_warmup_steps=1.5"],
                                       ["experiment=maf_mnist", "module.kl_warmup_steps=10"]])
def test_bad_kl_warmup_is_one_line(tmp_path, capsys, overrides):
    with pytest.raises(SystemExit):
        run(tmp_path, overrides)
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("config error: module.kl_warmup_steps=")


@pytest.mark.parametrize("posterior", ["planar", "radial", "sylvester_o", "sylvester_h", "sylvester_t", "iaf"])
@pytest.mark.parametrize("centered", [False, True], ids=["plain", "centered"])
def test_posterior_log_q_is_the_change_of_variables_of_the_sampled_map(posterior, centered):
    """log q(z_K | x) from posterior_sample against brute force in float64: log N(z_0; μ, σ²) minus
    log|det| of the autograd Jacobian of z_0 -> z_K, where z_K = f(z_0), or μ + f(z_0 - μ) when centred."""
    torch.manual_seed(0)
    vae = perturb(VAE((1, 8, 8), posterior, latent_dim=4, hidden=16, flow_length=3, iaf_hidden=8,
                      sylvester_columns=3, centered_flow=centered), 0.3).double()
    x = binarize(images(3), torch.Generator().manual_seed(1)).double()
    z, log_q = vae.posterior_sample(x, 2, torch.Generator().manual_seed(2))
    eps = torch.randn((3, 2, 4), generator=torch.Generator().manual_seed(2)).double()  # the same draw
    h = vae.encoder(x)
    mean, std = vae.mean(h), vae.std(h) + 1e-5
    for i in range(3):
        for s in range(2):
            z0 = mean[i] + std[i] * eps[i, s]

            def sampled_map(v, i=i):
                if centered:
                    return mean[i] + vae.flow((v - mean[i])[None], h[i:i + 1])[0][0]
                return vae.flow(v[None], h[i:i + 1])[0][0]
            jacobian = torch.autograd.functional.jacobian(sampled_map, z0)
            log_n = torch.distributions.Normal(mean[i], std[i]).log_prob(z0).sum()
            assert torch.allclose(sampled_map(z0), z[i, s], atol=1e-10)
            assert torch.allclose(log_q[i, s], log_n - torch.linalg.slogdet(jacobian)[1], atol=1e-8)
    if centered:  # and centring changes the map (this test would not notice a flag that does nothing)
        vae.centered_flow = False
        assert not torch.allclose(vae.posterior_sample(x, 2, torch.Generator().manual_seed(2))[0], z, atol=1e-4)
