"""The README's claims, each against something the code under test did not compute itself:
bits/dim and n_bits against hand-computed values, EMA weights in evaluation, warmup, clipping, and the
train.py command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from glow.exactness import perturb
from glow.module import DensityModule
from glow.quantize import bits_per_dim, preprocess

REPO = Path(__file__).resolve().parents[1]
TINY = {"image_shape": [1, 8, 8], "levels": 2, "steps": 2, "hidden_channels": 8}


# -- bits/dim and n_bits ---------------------------------------------------------------------------
def test_bits_per_dim_matches_hand_computed_values():
    # (-log p + D log 2^n) / (D ln 2) with D = 4, log p = -1: 1 / (4 ln 2) = 0.360674 plus n_bits
    log_prob = torch.tensor([-1.0, 0.0])
    assert bits_per_dim(log_prob, 4, 8).tolist() == pytest.approx([8.360674, 8.0], abs=1e-6)
    assert bits_per_dim(log_prob, 4, 5).tolist() == pytest.approx([5.360674, 5.0], abs=1e-6)


def test_n_bits_below_8_drops_low_bits_and_uses_bin_centres():
    pixels = torch.tensor([0, 7, 8, 255], dtype=torch.uint8).view(1, 1, 2, 2)
    # 5 bits: 32 bins of 8 levels; 0 and 7 share bin 0, 8 is bin 1, 255 is bin 31; centre = (bin + 0.5) / 32 - 0.5
    assert preprocess(pixels, 5, dequantize=False).flatten().tolist() == [-0.484375, -0.484375, -0.453125, 0.484375]
    y = preprocess(pixels, 5, generator=torch.Generator().manual_seed(0)).flatten()
    lows = torch.tensor([0, 0, 1, 31]) / 32 - 0.5
    assert ((y >= lows) & (y < lows + 1 / 32)).all()  # the noise stays inside each 1/32-wide bin


@pytest.mark.parametrize("n_bits", [5, 8])
def test_module_bits_per_dim_depends_on_num_dims_and_n_bits(n_bits):
    """A model whose log p(y) is -7 nats per image costs n_bits + 7 / (D ln 2) bits/dim, D = C*H*W = 192
    counted by hand for this 3-channel image (a log p of 0 would cancel D out of the formula)."""
    module = DensityModule({**TINY, "image_shape": [3, 8, 8]}, n_bits=n_bits)
    module.model.log_prob = lambda x, cond=None: torch.full((x.shape[0],), -7.0)
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    bpd = module.evaluate((images, torch.zeros(3, dtype=torch.long)), 0)["bpd"]
    expected = n_bits + 7.0 / (3 * 8 * 8 * math.log(2))
    assert bpd.tolist() == pytest.approx([expected] * 3, abs=1e-9)


def test_module_bits_per_dim_is_that_of_the_models_own_log_prob():
    """No mock: the module's evaluation figure is (-log p(y) + D log 2^n) / (D ln 2) of the live model's
    log_prob on the batch dequantised with each image's own evaluation noise (keyed by its index)."""
    torch.manual_seed(0)
    module = DensityModule({**TINY, "image_shape": [3, 8, 8]}, n_bits=5)
    perturb(module.model, 0.05)
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    bpd = module.evaluate((images, torch.zeros(2, dtype=torch.long)), 4)["bpd"]
    y = torch.cat([preprocess(images[i:i + 1], 5, generator=module.image_generator(1, i)) for i in range(2)])
    with torch.no_grad():
        nats = module.model.log_prob(y).double()
    expected = (-nats + 192 * 5 * math.log(2)) / (192 * math.log(2))
    assert bpd.tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert abs(bpd.mean().item() - 5) > 0.1  # the model's density is in the figure, not only n_bits


# -- EMA, warmup, clipping ---------------------------------------------------------------------------
def test_evaluation_uses_the_ema_weights():
    torch.manual_seed(0)
    module = DensityModule(TINY, ema_decay=0.9)
    perturb(module.model, 0.05, seed=1)
    perturb(module.ema.module, 0.05, seed=2)  # the average now differs from the live weights
    batch = (torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    with torch.no_grad():
        module._eval_step("val", batch, 0)
        evaluated = module.eval_metrics["val"].compute_and_reset()["bpd"].item()
        ema = module.ema.module.evaluate(module.eval_inputs(batch, 0, 0))["bpd"].mean().item()
        live = module.model.evaluate(module.eval_inputs(batch, 0, 0))["bpd"].mean().item()
    assert evaluated == pytest.approx(ema, abs=1e-6)
    assert abs(ema - live) > 1e-3, "the EMA and live weights give the same figure: nothing tested"


def test_warmup_is_linear_then_constant():
    module = DensityModule(TINY, lr=1e-3, warmup_steps=4)
    config = module.configure_optimizers()
    optimizer, schedule = config["optimizer"], config["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


class GradNorms(L.Callback):
    """Gradient norms before clipping (on_before_optimizer_step) and as the optimiser sees them."""

    def __init__(self):
        self.before, self.stepped = [], []

    @staticmethod
    def norm(module) -> float:
        return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.model.parameters()
                                                     if p.grad is not None])).item()

    def on_train_start(self, trainer, module):
        # a post hook: Lightning runs forward, backward and clipping inside optimizer.step(closure)
        trainer.optimizers[0].register_step_post_hook(lambda *_: self.stepped.append(self.norm(module)))

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.before.append(self.norm(module))


@pytest.mark.slow
def test_gradients_are_clipped_to_grad_clip_norm(tmp_path, synthetic_folder):
    import train
    from tests.conftest import compose_train

    clip = 0.01
    cfg = compose_train(tmp_path, ["data=imagefolder", f"data.path={synthetic_folder}", "data.image_size=16",
                                   "data.batch_size=8", "trainer.max_steps=3", f"module.grad_clip_norm={clip}"])
    torch.manual_seed(0)
    datamodule, module, trainer = train.build(cfg)
    norms = GradNorms()
    trainer.callbacks.append(norms)
    trainer.fit(module, datamodule=datamodule)
    assert len(norms.stepped) == 3 and max(norms.before) > 10 * clip, norms.before  # clipping had work to do
    assert all(n <= clip * (1 + 1e-4) for n in norms.stepped), norms.stepped


# -- the command line ------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_py_command_line(tmp_path, synthetic_folder):
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="offline", OMP_NUM_THREADS="1")
    command = [sys.executable, str(REPO / "train.py"), "debug=fast_dev_run", "logger=none", "data=imagefolder",
               f"data.path={synthetic_folder}", "data.image_size=16", "data.num_workers=0",
               "model.levels=2", "model.steps=2", "model.hidden_channels=8", f"paths.output_dir={tmp_path / 'run'}"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert math.isfinite(results["test_bpd"]) and results["test_images"] > 0
    bad = subprocess.run(command[:-1] + [f"paths.output_dir={tmp_path / 'bad'}", "module.n_bits=9"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == ("config error: module.n_bits=9 is not allowed: "
                                                   "use an integer in 1..8")
