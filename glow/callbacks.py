"""Training callbacks: sample grids at a few temperatures and exact reconstructions, every N steps.

Grids are written as PNG into the run directory and, when the logger is wandb, logged as images.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from glow import sampling
from glow.conditioning import grid_labels


class SampleGrid(L.Callback):
    def __init__(self, every_n_steps: int = 500, temperatures=(0.5, 0.7, 1.0), n: int = 16,
                 output_dir: str = "samples", seed: int = 0):
        if every_n_steps < 1:
            raise ValueError(f"callbacks.samples.every_n_steps={every_n_steps!r} is not allowed: use a positive integer")
        self.every_n_steps, self.temperatures, self.n = every_n_steps, list(temperatures), n
        self.output_dir, self.seed = Path(output_dir), seed
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 and step != self._last_step and step > 0:
            self.write(trainer, module, batch)

    def on_train_end(self, trainer: L.Trainer, module) -> None:
        if trainer.global_step != self._last_step and not trainer.fast_dev_run:
            self.write(trainer, module, None)

    @torch.no_grad()
    def write(self, trainer: L.Trainer, module, batch) -> None:
        self._last_step = trainer.global_step
        if not trainer.is_global_zero:
            return
        model = module.eval_model
        was_training = model.training
        model.eval()
        try:
            grids = {}
            generator = torch.Generator(device="cpu").manual_seed(self.seed)
            if model.kind.samples_from_nothing:  # an inpainting model needs a masked image to sample from
                labels = grid_labels(model, self.n, per_class=True)
                n = self.n if labels is None else len(labels)
                grids["samples"] = sampling.temperature_sweep(model, self.temperatures, n, generator, labels)
            if batch is None:
                batch = next(iter(trainer.datamodule.val_dataloader()))
            images, labels = batch[0][:8].to(module.device), batch[1][:8].to(module.device)
            cond = module.model_inputs((images, labels)).cond
            grids["reconstructions"] = sampling.reconstruction_grid(model, images, cond, module.n_bits)
        finally:
            model.train(was_training)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for name, grid in grids.items():
            nrow = self.n if name == "samples" else grid.shape[0] // 2
            grid, bad = sampling.blank_nonfinite(grid)
            if bad:  # reported, and the images left blank (grey) rather than silently clipped
                rank_zero_warn(f"step {trainer.global_step}: {bad} of {grid.shape[0]} {name} are non-finite "
                               "(NaN or inf); they are left grey in the grid")
            path = self.output_dir / f"{name}_step{trainer.global_step:07d}.png"
            sampling.save_grid(grid, path, n_bits=module.n_bits, nrow=nrow)
            if isinstance(trainer.logger, WandbLogger):
                trainer.logger.log_image(key=f"samples/{name}", images=[str(path)], step=trainer.global_step)

    def state_dict(self) -> dict:
        return {"last_step": self._last_step}

    def load_state_dict(self, state: dict) -> None:
        self._last_step = state.get("last_step", -1)
