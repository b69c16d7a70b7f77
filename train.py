"""Train a Glow (or its NICE / RealNVP presets) from Hydra configs with Lightning.

    python train.py                                    # the default MNIST experiment (what `make train` runs)
    python train.py model=realnvp trainer.max_steps=3000
    python train.py experiment=cifar10_glow trainer=ddp trainer.devices=8
    python train.py trainer.precision=bf16-mixed logger=csv
    python train.py ckpt_path=outputs/mnist/<run>/checkpoints/last.ckpt    # resume exactly
    python train.py -m model.coupling=additive,affine,spline                # a sweep (multirun)

Each run directory (outputs/<task>/<time>/) gets checkpoints/{last,best-*}.ckpt, samples/*.png,
wandb/ (offline) and results.json with the test bits/dim over the whole test split.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from glow.config import ConfigError, exit_with_config_error, unwrap, validate_image_size, validate_train

log = logging.getLogger("train")

# Our train sampler resumes mid-epoch from the restored global step (glow.data.ResumableSampler),
# so Lightning's generic warning about non-resumable loaders does not apply.
warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")


def build(cfg: DictConfig):
    """Validate, then instantiate data module, LightningModule, callbacks, logger and trainer.

    Nothing is loaded or trained here, so a bad value costs no time.
    """
    validate_train(cfg)
    datamodule = instantiate(cfg.data)
    validate_image_size(cfg.model, datamodule.image_shape)
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    model_config["image_shape"] = list(datamodule.image_shape)
    if model_config.get("conditional") == "class":
        model_config["num_classes"] = datamodule.num_classes
    # plain values only: the checkpoint then rebuilds the model and loads with weights_only=True
    module = instantiate(cfg.module, model_config=model_config, _convert_="all")
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    logger = instantiate(cfg.logger) if cfg.get("logger") and "_target_" in cfg.logger else False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    return datamodule, module, trainer


def build_or_exit(cfg: DictConfig):
    try:
        return build(cfg)
    except Exception as err:  # a bad config value: one line, before any work, exit code 2
        if not isinstance(unwrap(err), (ConfigError, ValueError, FileNotFoundError)):
            raise
        exit_with_config_error(err)


def save_final_checkpoint(trainer: L.Trainer) -> None:
    """last.ckpt holds the final weights even when max_steps is not a multiple of the save interval."""
    callback = trainer.checkpoint_callback
    if callback is None or trainer.fast_dev_run or not callback.dirpath:
        return
    path = Path(callback.dirpath) / "last.ckpt"
    trainer.save_checkpoint(path)  # every rank calls it; only rank 0 writes
    callback.last_model_path = str(path)


def run(cfg: DictConfig) -> dict:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module, trainer = build_or_exit(cfg)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")

    start = time.time()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    fit_seconds = time.time() - start
    save_final_checkpoint(trainer)
    results = {"steps": trainer.global_step, "wall_time_s": round(fit_seconds, 1),
               "nonfinite_steps": int(module.nonfinite_steps)}
    if cfg.test_after_fit:
        metrics = trainer.test(module, datamodule=datamodule, verbose=False)
        results["test_bpd"] = metrics[0]["test/bpd"]
        results["test_nonfinite"] = int(metrics[0]["test/nonfinite"])
        results["test_images"] = int(metrics[0]["test/images"])
        if "test/hole_bpd" in metrics[0]:
            results["test_hole_bpd"] = metrics[0]["test/hole_bpd"]
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and not trainer.fast_dev_run:
        results["last_checkpoint"] = checkpoint.last_model_path or None
        results["best_checkpoint"] = checkpoint.best_model_path or None
    if trainer.is_global_zero:
        output_dir = Path(cfg.paths.output_dir)
        (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        log.info("results: %s", json.dumps(results))
        if "test_bpd" in results:
            print(f"test bits/dim: {results['test_bpd']:.4f} after {results['steps']} steps "
                  f"({fit_seconds / 60:.1f} min); written to {output_dir / 'results.json'}")
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    results = run(cfg)
    return results.get("test_bpd")  # lets Hydra sweepers optimise it


if __name__ == "__main__":
    main()
