"""Every README recipe composes to what it says: presets are not overwritten by the default experiment."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import CONF


def composed_model(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=["logger=none", *overrides]).model


def test_default_is_the_small_affine_glow():
    model = composed_model()
    assert (model.levels, model.steps, model.hidden_channels) == (3, 8, 64)
    assert (model.coupling, model.permutation, model.mask, model.actnorm) == ("affine", "conv_lu", "channel", True)
    assert model.inner_actnorm and model.zero_logscale and model.learn_top and not model.learn_top_per_position
    assert model.affine_scale == "tanh" and not model.pixel_actnorm  # glow_small's one change to Glow


def test_realnvp_preset_is_affine_checkerboard_multiscale():
    model = composed_model("model=realnvp")
    assert (model.coupling, model.mask, model.permutation) == ("affine", "checkerboard", "reverse")
    assert (model.levels, model.steps, model.hidden_channels) == (3, 8, 256)
    assert not model.actnorm and not model.learn_top


def test_nice_preset_has_one_level_and_final_scaling():
    model = composed_model("model=nice")
    assert (model.coupling, model.permutation, model.levels, model.steps) == ("additive", "reverse", 1, 4)
    assert model.final_scaling and not model.actnorm and not model.learn_top


def test_glow_preset_is_the_papers_size():
    model = composed_model("model=glow")
    assert (model.levels, model.steps, model.hidden_channels, model.coupling) == (3, 32, 512, "affine")
    assert not model.pixel_actnorm and model.affine_scale == "sigmoid"


@pytest.mark.parametrize("experiment, expected", [
    ("cifar10_glow", dict(levels=3, steps=32, hidden_channels=512, coupling="affine")),
    ("mnist_class", dict(levels=4, steps=4, conditional="class", class_head=True)),
    ("inpaint_mnist", dict(levels=3, steps=8, conditional="image", cond_encoder="unet", conditional_layers=True,
                           observed_noise="gaussian", hole_predictor=True, hole_hypotheses=8)),
    ("inpaint_cifar10", dict(levels=3, steps=8, conditional="image", cond_encoder="unet", conditional_layers=True,
                             observed_noise="gaussian", hole_predictor=True, hole_hypotheses=8)),
    ("celeba64_additive_5bit", dict(coupling="additive")),
])
def test_experiments_compose_to_their_model(experiment, expected):
    model = composed_model(f"experiment={experiment}")
    assert {k: model[k] for k in expected} == expected


def test_command_line_keys_override_the_experiment():
    assert composed_model("model.coupling=additive").coupling == "additive"
    assert composed_model("model=realnvp", "model.mask=channel").mask == "channel"
