"""Progress where work takes a while: a bar over sample.py's batches (none for one batch, none in training),
the inpainting route's own bar (method=map counts its ascent steps, never a stuck "MCMC 0/40"), and
"compiling..." with the time the compiling step took."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from glow.model import Glow
from glow.module import DensityModule
from glow.sampling.grids import sample, temperature_sweep
from glow.sampling.task_inpaint import task_inpaint


def tiny() -> Glow:
    torch.manual_seed(0)
    return Glow((1, 8, 8), levels=2, steps=1, hidden_channels=4).eval()


def bar_counts(err: str, label: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(rf"{label}:.*?(\d+)/(\d+)", err)]


def test_sampling_shows_a_bar_over_its_batches_only_when_asked_and_there_are_several(capfd):
    model = tiny()
    sample(model, 10, batch_size=4, progress="sampling")
    err = capfd.readouterr().err
    assert (3, 3) in bar_counts(err, "sampling")  # 10 images in batches of 4: three batches, all done
    temperature_sweep(model, [0.5, 1.0], 4, batch_size=2, progress="sampling")
    assert (4, 4) in bar_counts(capfd.readouterr().err, "sampling")  # 2 rows x 2 batches
    sample(model, 10, batch_size=4)  # training's grids and the page: no bar
    sample(model, 3, batch_size=4, progress="sampling")  # one batch: nothing to follow
    assert "sampling" not in capfd.readouterr().err


def test_map_inpainting_counts_its_own_steps_not_mcmc(tmp_path, capfd):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "a.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    cfg = OmegaConf.create({"images": [str(tmp_path / "a.png")], "mask_image": str(tmp_path / "m.png"),
                            "data": {"resize": "pad"}, "method": "map", "map_steps": 5, "mcmc_steps": None,
                            "inpaint_temperature": None, "step_size": None, "init": None, "mask": "center",
                            "paths": {"output_dir": str(tmp_path / "out")}})
    task_inpaint(cfg, tiny(), 2, torch.Generator().manual_seed(0))
    err = capfd.readouterr().err
    assert bar_counts(err, "map")[-1] == (5, 5) and "mcmc" not in err.lower()


def test_compiling_is_announced_and_timed(capsys):
    module = DensityModule({"image_shape": [1, 8, 8], "levels": 2, "steps": 1, "hidden_channels": 4},
                           warmup_steps=1, init_batch_size=2)
    module._trainer = SimpleNamespace(is_global_zero=True, progress_bar_callback=None)
    module._initialize_model = lambda: None
    module.model.compile_if_asked = lambda: True  # what model.compile=true does, without minutes of inductor
    module.on_fit_start()
    assert "compiling the model (model.compile=true)" in capsys.readouterr().out
    module.on_train_batch_end(None, None, 0)
    assert re.search(r"compiled in \d+\.\d s", capsys.readouterr().out)
    module.on_train_batch_end(None, None, 1)
    assert "compiled" not in capsys.readouterr().out  # said once
    assert Glow((1, 8, 8), levels=2, steps=1, hidden_channels=4).compile_if_asked() is False
