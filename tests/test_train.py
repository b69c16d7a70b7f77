"""Training from the composed Hydra config: presets, real MNIST, resume, DDP, bf16, non-finite guard."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

import glow
import train
from glow.quantize import bits_per_dim, preprocess
from hydra.utils import instantiate
from tests.conftest import compose_train


def run(tmp_path, overrides, debug="default"):
    cfg = compose_train(tmp_path, overrides, debug)
    return train.run(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["glow", "realnvp", "nice"])
@pytest.mark.parametrize("coupling", ["model", "spline"])
def test_fast_dev_run_every_preset_on_synthetic_images(tmp_path, synthetic_folder, preset, coupling):
    overrides = [f"model={preset}", "data=imagefolder", f"data.path={synthetic_folder}", "data.image_size=16",
                 "model.levels=2", "model.steps=2", "model.hidden_channels=8"]
    if coupling == "spline":
        overrides.append("model.coupling=spline")
    results = run(tmp_path / "run", overrides, debug="fast_dev_run")  # tmp_path holds the images: not a run's
    assert torch.isfinite(torch.tensor(results["test_bpd"]))
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))  # "no checkpoint is saved" (conf/debug)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["glow", "realnvp", "nice"])
def test_fast_dev_run_every_preset_on_real_mnist(tmp_path, mnist_root, preset):
    results = run(tmp_path, [f"model={preset}", f"data.root={mnist_root}", "data.download=false",
                             "data.fallback=false"], debug="fast_dev_run")
    assert 0 < results["test_bpd"] < 20


@pytest.mark.slow
def test_short_mnist_run_learns(tmp_path, mnist_root):
    """Untrained vs trained test bits/dim on the real MNIST test images (first 500)."""
    common = [f"data.root={mnist_root}", "data.download=false", "data.fallback=false", "data.limit_test=500",
              "data.limit_train=null", "data.batch_size=32", "module.warmup_steps=20", "module.lr=3e-3",
              "model.levels=2", "model.steps=4", "model.hidden_channels=32"]
    untrained = run(tmp_path / "untrained", common + ["trainer.max_steps=1", "module.lr=1e-12"])
    trained = run(tmp_path / "trained", common + ["trainer.max_steps=250", "trainer.val_check_interval=250"])
    # results.json against an independent evaluation: the last checkpoint through glow.load, the first
    # 500 test images, our own dequantisation noise and the bits/dim formula, outside Lightning's test loop
    results = json.loads((tmp_path / "trained" / "results.json").read_text())
    model = glow.load(tmp_path / "trained" / "checkpoints" / "last.ckpt")
    datamodule = instantiate(compose_train(tmp_path / "check", common).data)
    datamodule.setup()
    images = torch.stack([datamodule.test_set[i][0] for i in range(500)])
    with torch.no_grad():
        x = preprocess(images, model.n_bits, generator=torch.Generator().manual_seed(0))
        independent = bits_per_dim(model.log_prob(x), model.num_dims, model.n_bits).mean().item()
    assert results["test_images"] == 500 and results["test_bpd"] == pytest.approx(independent, abs=0.02)
    assert trained["test_bpd"] < untrained["test_bpd"] - 2.0, (untrained, trained)
    assert (tmp_path / "trained" / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "trained" / "samples").glob("samples_step*.png"))


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


def _fit(cfg, recorder=None, ckpt_path=None):
    datamodule, module, trainer = train.build(cfg)
    if recorder is not None:
        trainer.callbacks.append(recorder)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    return module, trainer


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path, synthetic_folder):
    """8 steps straight == 4 steps, checkpoint, resume to 8: same losses, weights, optimiser, EMA."""
    common = ["data=imagefolder", f"data.path={synthetic_folder}", "data.image_size=16", "data.batch_size=8",
              "trainer.deterministic=true", "trainer.val_check_interval=4", "module.warmup_steps=6",
              "module.ema_decay=0.9", "trainer.max_steps=8", "data.val_fraction=0.2"]
    straight = LossRecorder()
    L.seed_everything(0)
    module_a, _ = _fit(compose_train(tmp_path / "a", common), straight)
    # the interrupted run: stops at 4 (same schedule), then resumes in a fresh process-like setting
    L.seed_everything(0)
    _fit(compose_train(tmp_path / "b", common + ["trainer.max_steps=4"]))
    checkpoint = tmp_path / "b" / "checkpoints" / "last.ckpt"
    resumed = LossRecorder()
    L.seed_everything(123)  # a different global seed must not matter
    module_b, trainer_b = _fit(compose_train(tmp_path / "c", common), resumed, ckpt_path=str(checkpoint))
    assert trainer_b.global_step == 8
    assert sorted(resumed.losses) == [5, 6, 7, 8]
    for step in resumed.losses:
        assert resumed.losses[step] == pytest.approx(straight.losses[step], abs=1e-6), step
    for (name, a), b in zip(module_a.state_dict().items(), module_b.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    # ActNorm was not re-initialised on resume: its flags came from the checkpoint
    assert module_b.model.is_initialized


def test_resume_from_missing_checkpoint_fails_loudly(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, ["ckpt_path=/no/such/last.ckpt"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error: ckpt_path='/no/such/last.ckpt' is not allowed") and "\n" not in err


@pytest.mark.parametrize("override,key", [
    ("model.coupling=bogus", "model.coupling='bogus' is not allowed: use one of additive, affine, spline"),
    ("model.permutation=bogus", "model.permutation='bogus' is not allowed"),
    ("data.image_size=30", "data.image_size=30 is not allowed with model.levels=2"),
    ("module.n_bits=9", "module.n_bits=9 is not allowed: use an integer in 1..8"),
    ("module.n_bits=0", "module.n_bits=0 is not allowed"),
    ("model.steps=0", "model.steps=0 is not allowed: use a positive integer"),
    ("model.steps=-3", "model.steps=-3 is not allowed"),
    ("data.batch_size=0", "data.batch_size=0 is not allowed"),
    ("module.optimizer=sgd", "module.optimizer='sgd' is not allowed"),
    ("trainer.precision=8-mixed", "trainer.precision='8-mixed' is not allowed"),
    ("data.name=imagenet", "data.name='imagenet' is not allowed"),
])
def test_bad_config_values_give_one_line_before_any_work(tmp_path, capsys, override, key):
    with pytest.raises(SystemExit):
        run(tmp_path, [override])
    err = capsys.readouterr().err.strip()
    assert key in err, err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "checkpoints").exists()


class PoisonStep(L.Callback):
    """Makes the loss of one training step NaN and records the weights around it."""

    def __init__(self, step: int):
        self.step, self.before, self.after = step, None, None
        self._original = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            self.before = {k: v.clone() for k, v in module.model.state_dict().items()}
            self._original = module.model.log_prob
            module.model.log_prob = lambda *a, **k: self._original(*a, **k) * float("nan")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self._original is not None:
            module.model.log_prob = self._original
            self._original = None
            self.after = {k: v.clone() for k, v in module.model.state_dict().items()}


@pytest.mark.slow
def test_nonfinite_guard_skips_poisoned_step(tmp_path, synthetic_folder):
    cfg = compose_train(tmp_path, ["data=imagefolder", f"data.path={synthetic_folder}", "data.image_size=16",
                                   "data.batch_size=8", "trainer.max_steps=6", "module.ema_decay=0.9"])
    torch.manual_seed(0)  # build() draws the initial weights
    datamodule, module, trainer = train.build(cfg)
    poison = PoisonStep(step=3)
    trainer.callbacks.append(poison)
    trainer.fit(module, datamodule=datamodule)
    assert int(module.nonfinite_steps) == 1
    assert all(torch.equal(poison.before[k], poison.after[k]) for k in poison.before)
    assert trainer.global_step == 6
    assert all(torch.isfinite(p).all() for p in module.parameters())


@pytest.mark.slow
def test_bf16_mixed_matches_fp32_on_the_same_weights(tmp_path, mnist_root):
    common = [f"data.root={mnist_root}", "data.download=false", "data.limit_test=256", "trainer.max_steps=30",
              "module.warmup_steps=5", "model.hidden_channels=32"]
    cfg = compose_train(tmp_path, common)
    torch.manual_seed(0)  # the threshold below holds for these weights, not for any draw
    datamodule, module, trainer = train.build(cfg)
    trainer.fit(module, datamodule=datamodule)
    fp32 = trainer.test(module, datamodule=datamodule, verbose=False)[0]["test/bpd"]
    bf16_trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, use_distributed_sampler=False,
                             enable_progress_bar=False, enable_model_summary=False)
    bf16 = bf16_trainer.test(module, datamodule=datamodule, verbose=False)[0]["test/bpd"]
    assert torch.isfinite(torch.tensor(bf16))
    assert abs(bf16 - fp32) < 0.05, (fp32, bf16)
    # and bf16-mixed training itself stays finite
    cfg = compose_train(tmp_path / "bf16", common + ["trainer.precision=bf16-mixed", "trainer.max_steps=10"])
    results = train.run(cfg)
    assert torch.isfinite(torch.tensor(results["test_bpd"])) and results["nonfinite_steps"] == 0


@pytest.mark.slow
def test_evaluate_script_reproduces_the_training_figure(tmp_path, synthetic_folder):
    import importlib.util

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tests.conftest import CONF, REPO

    data = ["data=imagefolder", f"data.path={synthetic_folder}", "data.image_size=16", "data.num_workers=0"]
    # in evaluate.py's precision (32-true): the default's precision=auto tests in bf16 where the CPU has it
    results = run(tmp_path / "train", data + ["trainer.max_steps=7", "module.ema_decay=0.9", "trainer.precision=32-true"])
    spec = importlib.util.spec_from_file_location("evaluate", REPO / "scripts" / "evaluate.py")
    evaluate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=data + [f"ckpt_path={results['last_checkpoint']}",
                                                               f"paths.output_dir={tmp_path / 'eval'}"])
    (tmp_path / "eval").mkdir()
    figures = evaluate.evaluate(cfg)
    assert figures["test_bpd"] == pytest.approx(results["test_bpd"], abs=1e-6)
    assert figures["test_images"] == results["test_images"] and figures["ema"]
