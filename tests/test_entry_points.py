"""The entry points' own checks, in process: --help pages, Hydra's composition errors as one line, presets that
refuse to override a chosen model, and the keys of train.py and sample.py that used to give tracebacks or run
forever (seeds, val_check_interval, trainer=gpu, ??? values, counts, image files, crafted checkpoints)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from PIL import Image

from glow.cli import composition_message, parse_cli
from glow.config import MAX_N, check_output_size, validate_sample, validate_train
from glow.errors import ConfigError
from glow.families import build_model
from glow.help import PAGES, help_text
from glow.presets import check_presets, conflicts
from glow.sampling.inpaint import ROUTES
from glow.sampling.load import rebuild
from glow.sampling.tasks import TASKS

from tests.conftest import CONF, compose_train


# ----------------------------------------------------------------------------- --help


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_help_page_has_usage_examples_choices_keys_and_exit_codes(page):
    text = help_text(page, CONF, {"suite=NAME": [("one", "1 row")]} if page == "benchmark" else None)
    assert text.startswith(f"usage: python {PAGES[page].script}")
    examples = [line for line in text.split("examples:")[1].split("\n\n")[0].splitlines() if line.strip()]
    assert 3 <= len(examples) <= 5 and all(line.strip().startswith("python ") for line in examples)
    assert "exit codes:" in text and "\n  2 " in text and "main keys" in text


def test_train_help_lists_experiments_presets_and_debug_vector():
    text = help_text("train", CONF)
    for experiment in (p.stem for p in (CONF / "experiment").glob("*.yaml")):
        assert f"\n  {experiment} " in text, experiment
    assert "realnvp" in text and "nice" in text and "vector" in text and "debug=vector" in text
    assert "trainer.max_steps=2000" in text and "module.lr=" in text  # the groups' keys, with defaults


def test_sample_help_lists_its_tasks_and_routes_not_train_groups():
    text = help_text("sample", CONF)
    assert all(f"\n  {task} " in text for task in TASKS) and all(f"\n  {route} " in text for route in ROUTES)
    assert "experiment=" not in text and "model=OPTION" not in text and "trainer=OPTION" not in text
    assert "n=null" in text and "How many" in text  # keys with their comments from conf/sample.yaml


# ----------------------------------------------------------------------------- composition errors


def composition_error(overrides: list[str]) -> BaseException:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises((ConfigCompositionException, MissingConfigException)) as err:
            compose(config_name="train", overrides=overrides)
    return err.value


def test_hydra_composition_errors_become_one_line_naming_the_override():
    text = composition_message(composition_error(["modle.steps=2"]), CONF, "train")
    assert text.startswith("modle.steps=2 is not allowed") and "did you mean model.steps?" in text
    text = composition_message(composition_error(["experiment=foo"]), CONF, "train")
    assert text.startswith("experiment=foo is not allowed: use one of") and "mnist_class" in text
    for text in (composition_message(composition_error(o), CONF, "train") for o in (["+seed=3"], ["model=nope"])):
        assert "\n" not in text


def test_a_plain_key_value_script_refuses_unknown_keys_in_one_line(capsys):
    defaults = OmegaConf.create({"suite": "cpu", "model": {"steps": 8}})
    cli, cfg = parse_cli(defaults, "benchmark", CONF, ["model.steps=2"])
    assert cfg.model.steps == 2 and cli.model.steps == 2
    with pytest.raises(SystemExit) as code:
        parse_cli(defaults, "benchmark", CONF, ["modle.steps=2"])
    err = capsys.readouterr().err
    assert code.value.code == 2 and err.count("\n") == 1
    assert err.startswith("config error: modle.steps=2 is not allowed") and "model.steps" in err
    with pytest.raises(SystemExit) as code:
        parse_cli(defaults, "benchmark", CONF, ["--help"])
    assert code.value.code == 0 and capsys.readouterr().out.startswith("usage:")


# ----------------------------------------------------------------------------- presets


def test_an_experiment_may_not_silently_override_a_model_chosen_on_the_command_line():
    choices = {"experiment": "mnist_class", "model": "realnvp"}
    found = conflicts(CONF, choices, ["experiment=mnist_class", "model=realnvp"])
    assert "model.coupling=additive (realnvp: affine)" in found
    with pytest.raises(ConfigError) as err:
        check_presets(CONF, choices, ["experiment=mnist_class", "model=realnvp"])
    assert str(err.value).startswith("model=realnvp is not allowed with experiment=mnist_class")
    # the user settles each key: composes to what they said
    given = ["experiment=mnist_class", "model=realnvp", "model.coupling=affine", "model.levels=4", "model.steps=4",
             "model.hidden_channels=64"]
    assert conflicts(CONF, choices, given) == []
    # the experiment's own model (and no model chosen) is what the experiment is written for
    assert conflicts(CONF, {"experiment": "mnist", "model": "glow_small"}, ["experiment=mnist", "model=glow_small"]) == []
    assert conflicts(CONF, {"experiment": "mnist_class", "model": "glow"}, ["experiment=mnist_class"]) == []


# ----------------------------------------------------------------------------- train.py's keys


@pytest.mark.parametrize("override, key", [
    ("trainer.val_check_interval=0", "trainer.val_check_interval"),
    ("seed=36893488147419103232", "seed"),
    ("seed=-1", "seed"),
    ("data=imagefolder", "data.path"),
])
def test_train_keys_that_gave_tracebacks_are_one_line(tmp_path, override, key):
    cfg = compose_train(tmp_path, [override])
    with pytest.raises(ConfigError) as err:
        validate_train(cfg)
    assert str(err.value).startswith(f"{key}=") and "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_trainer_gpu_on_a_cpu_machine_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^trainer.accelerator='gpu' is not allowed: .*trainer=cpu"):
        validate_train(compose_train(tmp_path, ["trainer=gpu"]))


# ----------------------------------------------------------------------------- sample.py's keys


def sample_cfg(tmp_path, **over):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="sample", overrides=[f"paths.output_dir={tmp_path}"])
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"")
    return OmegaConf.merge(cfg, {"ckpt_path": str(ckpt), "device": "cpu", **over})


def test_sample_counts_seeds_and_image_files_are_bounded_in_one_line(tmp_path):
    Image.new("1", (6000, 6000)).save(tmp_path / "bomb.png")
    (tmp_path / "notes.png").write_text("not an image")
    cases = {"n": {"n": 10 ** 7}, "batch_size": {"batch_size": 10 ** 6}, "seed": {"seed": 2 ** 65},
             "points": {"task": "interpolate", "points": 10 ** 6},
             "images": {"task": "reconstruct", "images": [str(tmp_path / "notes.png")]},
             "mask_image": {"task": "inpaint", "images": [str(tmp_path / "notes.png")],
                            "mask_image": str(tmp_path / "bomb.png")}}
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.png")  # reading it would block forever: refused as not a regular file
        cases["images "] = {"task": "reconstruct", "images": [str(tmp_path / "fifo.png")]}
    for key, over in cases.items():
        if key == "mask_image":
            Image.new("L", (8, 8)).save(tmp_path / "notes.png")  # a real image: the mask is what is wrong
        with pytest.raises(ConfigError) as err:
            validate_sample(sample_cfg(tmp_path, **over))
        assert str(err.value).startswith(f"{key.strip()}=") and "\n" not in str(err.value), (key, err.value)
    with pytest.raises(ConfigError, match="decompression bomb"):
        validate_sample(sample_cfg(tmp_path, task="inpaint", images=[str(tmp_path / "notes.png")],
                                   mask_image=str(tmp_path / "bomb.png")))


def test_the_grid_of_a_task_is_bounded_by_its_memory(tmp_path):
    model = SimpleNamespace(num_dims=3 * 256 * 256, image_shape=(3, 256, 256), kind=SimpleNamespace(num_classes=0))
    cfg = sample_cfg(tmp_path, n=MAX_N, task="temperature")
    with pytest.raises(ConfigError) as err:
        check_output_size(cfg, model, 8)
    assert str(err.value).startswith(f"n={MAX_N} is not allowed") and "GiB" in str(err.value)
    check_output_size(sample_cfg(tmp_path, n=16), model, 64)  # a grid that fits


# ----------------------------------------------------------------------------- crafted checkpoints


def checkpoint_of(config: dict, n_bits: int = 8) -> dict:
    model = build_model(config)
    return {"hyper_parameters": {"model_config": config, "n_bits": n_bits},
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}


TINY = {"family": "glow", "image_shape": [1, 8, 8], "levels": 2, "steps": 1, "hidden_channels": 4}


@pytest.mark.parametrize("change, words", [
    ({"n_bits": 0}, "n_bits=0"),
    ({"hidden_channels": 60000}, "describes"),      # 14e9 weights: estimated on the meta device, never allocated
    ({"steps": 10 ** 6}, "steps=1000000"),
    ({"image_shape": [3, 100000, 100000]}, "image_shape"),
])
def test_a_crafted_checkpoint_is_refused_before_anything_is_allocated(change, words):
    checkpoint = checkpoint_of(TINY)
    if "n_bits" in change:
        checkpoint["hyper_parameters"]["n_bits"] = change["n_bits"]
    else:
        checkpoint["hyper_parameters"]["model_config"] = {**TINY, **change}
    with pytest.raises(ConfigError) as err:
        rebuild(checkpoint, "crafted.ckpt")
    assert "crafted.ckpt" in str(err.value) and words in str(err.value) and "\n" not in str(err.value)
    assert rebuild(checkpoint_of(TINY), "good.ckpt").image_shape == (1, 8, 8)  # an honest one still loads


def test_maf_checkpoints_are_sized_on_the_meta_device_too():
    maf = {"family": "maf", "image_shape": [1, 4, 4], "num_layers": 2, "hidden": 8}
    assert rebuild(checkpoint_of(maf), "maf.ckpt").num_dims == 16
    crafted = checkpoint_of(maf)
    crafted["hyper_parameters"]["model_config"] = {**maf, "hidden": 60000}
    with pytest.raises(ConfigError, match="describes"):
        rebuild(crafted, "maf.ckpt")


# ----------------------------------------------------------------------------- each Hydra entry point, in process

HYDRA_SCRIPTS = {"train": "train.py", "sample": "sample.py", "evaluate": "scripts/evaluate.py",
                 "evaluate_inpainting": "scripts/evaluate_inpainting.py", "demo": "scripts/demo.py",
                 "learning_curve": "scripts/learning_curve.py"}


def run_entry(name: str, argv: list[str], monkeypatch) -> int:
    """The script's ``if __name__ == "__main__"`` line, in this process: its exit code."""
    import importlib.util

    from glow.cli import hydra_entry
    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location(f"entry_{name}", REPO / HYDRA_SCRIPTS[name])
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    # Hydra finds conf/ beside the file of a task function defined in __main__ (as when the script is run)
    monkeypatch.setattr(script.main.__wrapped__, "__module__", "__main__")
    monkeypatch.setattr("sys.argv", [HYDRA_SCRIPTS[name], *argv])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # hydra_entry sets it; restored after the test
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as code:
        hydra_entry(script.main, name, CONF)
    GlobalHydra.instance().clear()
    return code.value.code


@pytest.mark.parametrize("name", sorted(HYDRA_SCRIPTS))
def test_each_hydra_entry_point_has_help_and_refuses_an_unknown_key_in_one_line(name, tmp_path, monkeypatch,
                                                                               capsys):
    assert run_entry(name, ["--help", f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python {HYDRA_SCRIPTS[name]}") and not (tmp_path / "run").exists()
    assert run_entry(name, ["modle.steps=2", f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: modle.steps=2 is not allowed") and err.count("\n") == 1
