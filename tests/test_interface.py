"""The one model interface (glow.density): every family implements it, capabilities decide what callers
ask, and checkpoints carry a format version."""

from __future__ import annotations

import pytest
import torch

import glow
from glow.checkpoints import FORMAT_KEY, FORMAT_VERSION, atomic_save, read_checkpoint
from glow.density import DensityModel, ModelInputs, ObjectiveTerms
from glow.errors import CheckpointError, ConfigError, UnsupportedError
from glow.families import CLASSES, build_model
from glow.module import DensityModule
from glow.sampling.inpaint import ROUTES, pick_route
from glow.sampling.tasks import TASKS, check_fit

TINY = {"levels": 2, "steps": 1, "hidden_channels": 4, "image_shape": [1, 8, 8]}
CONFIGS = {
    "glow": TINY,
    "vae": {"family": "vae", "image_shape": [1, 8, 8], "latent_dim": 2, "hidden": 8, "flow_length": 1,
            "posterior": "planar"},
    "maf": {"family": "maf", "image_shape": [1, 4, 4], "num_layers": 1, "hidden": 8},
    "iaf": {"family": "iaf", "image_shape": [1, 4, 4], "num_layers": 1, "hidden": 8},
}


@pytest.mark.parametrize("family", list(CONFIGS))
def test_every_family_is_a_density_model_with_what_its_capabilities_promise(family):
    model = build_model(CONFIGS[family])
    assert isinstance(model, DensityModel) and type(model) is CLASSES[family]
    caps = model.capabilities
    assert set(caps.inpaint_routes) <= set(ROUTES)
    images = torch.randint(0, 256, (3, *model.image_shape), dtype=torch.uint8)
    inputs = ModelInputs(images, torch.zeros(3, dtype=torch.long), 8, torch.Generator().manual_seed(0))
    loss, figures = model.objective(inputs, ObjectiveTerms())
    assert loss.dim() == 0 and torch.isfinite(loss) and figures
    evaluated = model.evaluate(ModelInputs(images, torch.zeros(3, dtype=torch.long), 8))
    assert evaluated["bpd"].shape == (3,)
    assert set(evaluated) - {"bpd"} <= set(caps.eval_figures)
    assert model.sample(2).shape == (2, *model.image_shape)
    if caps.density == "exact":
        assert model.log_prob(inputs.x).shape == (3,)
    else:
        with pytest.raises(UnsupportedError, match="cannot give an exact log-density"):
            model.log_prob(inputs.x)
    if caps.latent_code != "none":
        zs, _ = model.encode(inputs.x)
        assert model.decode(zs).shape == inputs.x.shape
    for task in TASKS:  # each task either fits or says why in one line
        try:
            check_fit(model, task)
        except UnsupportedError as err:
            assert "\n" not in str(err) and str(err).startswith(f"task={task!r} is not allowed")


def test_auto_picks_the_first_route_and_a_missing_route_is_one_line():
    assert pick_route(build_model(TINY), "auto") == "latent"
    assert pick_route(build_model({**TINY, "conditional": "image", "cond_channels": 4}), "auto") == "cglow"
    assert pick_route(build_model(CONFIGS["maf"]), "auto") == "mcmc"
    with pytest.raises(UnsupportedError, match=r"\(VAE, conditional=None\) has no inpainting route"):
        pick_route(build_model(CONFIGS["vae"]), "auto")
    with pytest.raises(ConfigError, match="method='cglow' is not allowed: .* supports latent, mcmc, map"):
        pick_route(build_model(TINY), "cglow")


def test_the_training_module_carries_every_family(tmp_path):
    for config in CONFIGS.values():
        module = DensityModule(config)
        assert module.eval_metrics["test"].extra.keys() == set(module.model.capabilities.eval_figures)


def _saved(tmp_path, version):
    module = DensityModule(TINY)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    if version is not None:
        checkpoint[FORMAT_KEY] = version
    path = tmp_path / f"v{version}.ckpt"
    atomic_save(checkpoint, path)
    return path


def test_a_checkpoint_without_a_version_is_format_1_and_loads(tmp_path):
    model = glow.load(_saved(tmp_path, None))
    assert isinstance(model, glow.Glow)


def test_a_newer_format_is_one_line_naming_both_versions(tmp_path):
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(_saved(tmp_path, FORMAT_VERSION + 1))
    message = str(err.value)
    assert "\n" not in message and f"format version {FORMAT_VERSION + 1}" in message
    assert f"reads versions 1 to {FORMAT_VERSION}" in message


def test_an_older_checkpoint_that_does_not_fit_names_both_versions(tmp_path):
    path = _saved(tmp_path, 1)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if "top_prior" not in k}
    atomic_save(checkpoint, path)
    with pytest.raises(CheckpointError) as err:
        glow.load(path)
    message = str(err.value)
    assert "\n" not in message and f"written by checkpoint format 1; this code writes {FORMAT_VERSION}" in message
    assert "weights missing (first: top_prior" in message


@pytest.mark.slow
def test_train_py_writes_the_format_version(tmp_path):
    from tests.conftest import compose_train
    import train

    train.run(compose_train(tmp_path / "run", ["data=imagefolder", f"data.path={_folder(tmp_path)}", "model.levels=2",
                                               "model.steps=1", "model.hidden_channels=4", "trainer.max_steps=2",
                                               "data.image_size=8", "data.batch_size=4", "test_after_fit=false"]))
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)[FORMAT_KEY] == FORMAT_VERSION


def _folder(tmp_path):
    import numpy as np
    from PIL import Image

    root = tmp_path / "images"
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
        for i in range(24):
            Image.fromarray(np.full((8, 8, 3), i * 10, dtype=np.uint8)).save(root / split / "a" / f"{i}.png")
    return root
