"""Test bits/dim of any train.py checkpoint, computed by the same code as at the end of training.

    python scripts/evaluate.py ckpt_path=outputs/mnist/<run>/checkpoints/last.ckpt      # the run's own data
    python scripts/evaluate.py ckpt_path=... data.path=/new/place/of/the/images          # the run's, moved
    python scripts/evaluate.py ckpt_path=... data=imagefolder data.path=../shared/datasets/cifar10-subset
    python scripts/evaluate.py ckpt_path=... trainer.precision=bf16-mixed split=val

The data set, image size and layout are the checkpoint's run's (glow.run_config), with data.* keys
given here on top; its figure equals the run's results.json on the same split (per-image noise, any
data.eval_batch_size). Writes <run dir>/results.json with {"test_bpd": ..., ...}. The checkpoint loads
with weights_only=True. Exit code 2: a bad value or checkpoint, one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from glow.checkpoints import read_checkpoint
from glow.cli import hydra_entry
from glow.config import require_values, validate_ckpt_path
from glow.data.checks import check_image_shape
from glow.errors import ConfigError, exit_with_config_error
from glow.module import DensityModule
from glow.run_config import use_run_data
from glow.rundir import register_resolver
from glow.sampling.load import rebuild

register_resolver()  # ${unique_id:} in conf/evaluate.yaml's hydra.run.dir


def evaluate(cfg: DictConfig) -> dict:
    try:
        validate_ckpt_path(cfg.ckpt_path, required=True)
        require_values(cfg)
        if cfg.split not in ("test", "val"):
            raise ConfigError(f"split={cfg.split!r} is not allowed: use test or val")
        # one line naming the file if it is empty, truncated, foreign or crafted (sizes checked before allocating)
        checkpoint = read_checkpoint(cfg.ckpt_path)
        rebuild(checkpoint, cfg.ckpt_path)
        use_run_data(cfg, cfg.ckpt_path, checkpoint, checkpoint["hyper_parameters"]["model_config"].get("image_shape"))
        del checkpoint
        datamodule = instantiate(cfg.data)
    except (ConfigError, ValueError) as err:
        exit_with_config_error(err)
    module = DensityModule.load_from_checkpoint(cfg.ckpt_path, map_location="cpu", weights_only=True)
    if not cfg.ema:
        module.ema = None
    try:
        check_image_shape(datamodule.image_shape, module.model.image_shape, cfg.data.name)
    except ConfigError as err:
        exit_with_config_error(err)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    run = trainer.test if cfg.split == "test" else trainer.validate
    metrics = run(module, datamodule=datamodule, verbose=False)[0]
    results = {f"{cfg.split}_bpd": metrics[f"{cfg.split}/bpd"], f"{cfg.split}_images": int(metrics[f"{cfg.split}/images"]),
               f"{cfg.split}_nonfinite": int(metrics[f"{cfg.split}/nonfinite"]),
               "ckpt_path": str(cfg.ckpt_path), "ema": module.ema is not None,
               "precision": str(cfg.trainer.precision)}
    for name in module.model.capabilities.eval_figures:  # the family's own figures, e.g. hole_bpd
        if f"{cfg.split}/{name}" in metrics:
            results[f"{cfg.split}_{name}"] = metrics[f"{cfg.split}/{name}"]
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir) / "results.json"
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"{cfg.split} bits/dim: {results[f'{cfg.split}_bpd']:.4f} over {results[f'{cfg.split}_images']} images; "
              f"written to {out}")
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    hydra_entry(main, "evaluate", Path(__file__).resolve().parents[1] / "conf")  # --help; composition errors: one line
