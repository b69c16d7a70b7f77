"""Sample from any train.py checkpoint: one task, PNG grids into the run directory (outputs/sample/<time>_<id>/).

    python sample.py ckpt_path=<run>/checkpoints/last.ckpt                         # 64 samples at T=0.7
    python sample.py ckpt_path=... task=temperature                                # a row per T, same noise
    python sample.py ckpt_path=... task=interpolate indices=[0,1,2,3] mode=slerp   # test images 0-1 and 2-3
    python sample.py ckpt_path=... task=interpolate images=[a.png,b.png]
    python sample.py ckpt_path=... task=reconstruct n=16                           # exact decode(encode(x))
    python sample.py ckpt_path=... task=class classes=[3,8] n=16                   # class-conditional models
    python sample.py ckpt_path=... task=manipulate attribute=8 baseline=3          # MNIST 3 -> 8 direction
    python sample.py ckpt_path=... task=manipulate data=celeba data.target=attr attribute=Smiling
    python sample.py ckpt_path=... task=inpaint mask=center mask_size=14 indices=[0,1,2,3] n=8   # c-Glow or latent MCMC
    python sample.py ckpt_path=... task=inpaint images=[a.png] mask_image=m.png   # your mask, white = missing;
                                                   # completions also at a.png's size: inpaint_a_<k>.png
    python sample.py ckpt_path=... task=inpaint images=[a.png] method=map

Common options: seed=0 device=auto|cpu|cuda batch_size=64 n=... ema=true. Tasks that read real
images by index use the test split of the checkpoint's run's data config (glow.run_config: its
.hydra/config.yaml, else the checkpoint's record); ``data.*`` keys given here go on top, ``data=<name>``
picks another data set. The EMA weights are used when the checkpoint has them; everything runs in float32. A
non-finite image is reported with a warning and left grey in its grid, never written silently.
A bad option stops the run with one line, ``config error: ...``, and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from glow import sampling
from glow.cli import hydra_entry
from glow.config import check_output_size, validate_sample
from glow.errors import ConfigError, exit_with_config_error
from glow.run_config import use_run_data
from glow.rundir import register_resolver
from glow.sampling.load import rebuild
from glow.sampling.tasks import TASKS, check_task, output_name

register_resolver()  # ${unique_id:} in conf/sample.yaml's hydra.run.dir


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(cfg: DictConfig) -> dict:
    """Run one task; returns {"task", "path", "rows", "cols", "count", "nonfinite", "summary"}."""
    try:
        validate_sample(cfg)
        device = pick_device(cfg.device)
        torch.manual_seed(cfg.seed)
        checkpoint = sampling.load_checkpoint(cfg.ckpt_path)
        model = rebuild(checkpoint, cfg.ckpt_path, use_ema=cfg.ema).to(device)
        use_run_data(cfg, cfg.ckpt_path, checkpoint, model.image_shape)  # the data of the checkpoint's run
        del checkpoint
        check_task(cfg, model)
        check_output_size(cfg, model, TASKS[cfg.task].default_n)  # n bounded by the memory of its grid
        generator = torch.Generator().manual_seed(cfg.seed)  # CPU draws: the same noise on any device
        task = TASKS[cfg.task]
        images, nrow, summary = task.run(cfg, model, cfg.n or task.default_n, generator)
    except ConfigError as err:
        exit_with_config_error(err)

    images, bad = sampling.blank_nonfinite(images)
    path = Path(cfg.paths.output_dir) / output_name(cfg)
    if bad:
        print(f"warning: {bad} of {images.shape[0]} images are non-finite (NaN or inf); they are left grey "
              f"in {path}", file=sys.stderr)
    sampling.save_grid(images, path, n_bits=model.n_bits, nrow=nrow)
    rows, cols = sampling.grid_shape(images.shape[0], nrow)
    print(f"{path}  ({rows}x{cols} grid: {summary})")
    return {"task": cfg.task, "path": str(path), "rows": rows, "cols": cols, "count": images.shape[0],
            "nonfinite": bad, "summary": summary}


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    hydra_entry(main, "sample", Path(__file__).resolve().parent / "conf")  # --help; composition errors: one line
