"""Train a Glow (or its NICE / RealNVP presets) from Hydra configs with Lightning.

    python train.py                                    # the default MNIST experiment (what `make train` runs)
    python train.py model=realnvp trainer.max_steps=3000
    python train.py experiment=cifar10_glow trainer=ddp trainer.devices=8
    python train.py trainer.precision=bf16-mixed logger=csv
    python train.py ckpt_path=outputs/mnist/<run>/checkpoints/last.ckpt    # resume exactly
    python train.py -m model.coupling=additive,affine,spline                # a sweep (multirun)
    python train.py hydra.run.dir=<run dir> ckpt_path=last                  # resume that directory's last.ckpt
    python train.py hydra.run.dir=<run dir> ckpt_path=auto trainer.max_steps=20000   # resume if it can, else start
    python train.py experiment=vae_mnist model.posterior=sylvester_o model.flow_length=4   # other families:
    python train.py experiment=maf_mnist                                     # model.family (glow.families)
    python train.py experiment=distill_mnist teacher_ckpt=<maf run>/checkpoints/last.ckpt

Exit codes: 0 done; 2 a bad config value or checkpoint, a run directory that is not this run's, or a
run directory that stopped taking writes (one line; what was saved stays intact); 3 diverged;
143 / 138 / 130 stopped by SIGTERM / SIGUSR1 / SIGINT after writing a resumable last.ckpt.

Each run directory (outputs/<task>/<time>_<run id>/, unique per run, printed first) gets checkpoints/{last,best-*}.ckpt,
samples/*.png, wandb/ (offline) and results.json with the test bits/dim over the whole test split. A run
locks its directory and never writes into one holding anything else (glow.rundir); a resumed run
(ckpt_path=auto or last) reuses its saved .hydra/config.yaml with this command's overrides on top (glow.resume).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import sys
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from glow.conditioning import config_from_data
from glow.checkpoints import SafeCheckpointIO, atomic_write_bytes, check_model_config, inside, read_checkpoint
from glow.cli import hydra_entry
from glow.config import check_seed, validate_train
from glow.divergence import Diverged
from glow.errors import ConfigError, exit_with_config_error, unwrap
from glow.families import complete_config, defaults
from glow.model_args import RUNTIME_ARGUMENTS
from glow.preempt import PreemptionCheckpoint
from glow.precision import resolve_precision
from glow import rundir
from glow.resume import check_resume_hparams, resumed_config, save_effective_config
from glow.run_config import RunConfigRecord
from glow.rundir import register_resolver

register_resolver()  # ${run_id:} in conf/train.yaml's hydra.run.dir

log = logging.getLogger("train")

# Our train sampler resumes mid-epoch from the restored global step (glow.data.ResumableSampler),
# so Lightning's generic warning about non-resumable loaders does not apply.
warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
# A resumed run's checkpoints/ holds its own checkpoints: not the stranger's files Lightning warns about.
warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")


def build(cfg: DictConfig):
    """Validate, then instantiate data module, LightningModule, callbacks, logger and trainer.

    Nothing is loaded or trained here, so a bad value costs no time.
    """
    validate_train(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.check_batch_fits()  # a batch larger than the data set: one line now, not a traceback in fit
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    model_config["image_shape"] = list(datamodule.image_shape)
    model_config.update(config_from_data(model_config.get("conditional"), datamodule.num_classes))
    model_config = complete_config(model_config)  # a distillation run: its teacher's architecture
    # plain values only: the checkpoint then rebuilds the model and loads with weights_only=True
    module = instantiate(cfg.module, model_config=model_config, _convert_="all")
    checkpoint_dir = Path(cfg.paths.output_dir) / "checkpoints"
    checkpoint_io = SafeCheckpointIO(checkpoint_dir)
    if cfg.get("ckpt_path"):  # read and checked here, before any work; Lightning reuses this copy
        checkpoint = read_checkpoint(cfg.ckpt_path)
        check_model_config(checkpoint, model_config, cfg.ckpt_path, defaults=defaults(model_config),
                           ignore=RUNTIME_ARGUMENTS)
        check_resume_hparams(checkpoint, module.hparams, cfg.ckpt_path)  # n_bits, optimizer, EMA
        checkpoint_io.preloaded[str(cfg.ckpt_path)] = checkpoint
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    for c in callbacks:
        if type(c).__name__ == "ModelCheckpoint":  # a plain one would trust restored paths
            raise ConfigError(f"callbacks: use glow.checkpoint_callbacks.SafeModelCheckpoint, not {type(c).__module__}."
                              f"ModelCheckpoint (it restores file paths from the checkpoint and deletes them)")
    callbacks += [PreemptionCheckpoint(checkpoint_dir), RunConfigRecord(cfg.data)]
    logger = instantiate(cfg.logger) if cfg.get("logger") and "_target_" in cfg.logger else False
    precision, why = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    if why and rundir.is_rank_zero():
        print(why, flush=True)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, plugins=[checkpoint_io], precision=precision)
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
    trainer.save_checkpoint(path, weights_only=False)  # every rank calls it; only rank 0 writes (atomically)
    callback.last_model_path = str(path)


def finite_or_null(results: dict) -> dict:
    """JSON has no NaN: a non-finite figure becomes null, and ``nonfinite_figures`` names them."""
    bad = [k for k, v in results.items() if isinstance(v, float) and not math.isfinite(v)]
    out = {k: (None if k in bad else v) for k, v in results.items()}
    if bad:
        out["nonfinite_figures"] = bad
    return out


def write_results(cfg: DictConfig, results: dict) -> Path:
    path = Path(cfg.paths.output_dir) / "results.json"
    atomic_write_bytes((json.dumps(finite_or_null(results), indent=2, allow_nan=False) + "\n").encode(), path)
    return path


# what a full disk, a file-size limit or a directory turned read-only raise when a run writes
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS)


def run(cfg: DictConfig) -> dict:
    """Claim the run directory (glow.rundir: checked and locked before any work), train, test."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    directory = cfg.paths.output_dir
    try:
        cfg.ckpt_path = rundir.claim(directory, cfg.get("ckpt_path"),
                                     "hydra.run.dir" if HydraConfig.initialized() else "paths.output_dir")
    except ConfigError as err:
        exit_with_config_error(err)
    if rundir.is_rank_zero():
        print(f"run directory: {Path(directory).resolve()}" + (f" (resuming {cfg.ckpt_path})" if cfg.ckpt_path else ""),
              flush=True)
    try:
        return train_and_test(cfg)
    except OSError as err:  # the disk filled or the directory stopped taking writes: atomic saves kept the rest
        if err.errno not in WRITE_ERRORS or (err.filename and not inside(err.filename, directory)):
            raise
        print(f"error: cannot write {err.filename or 'into the run directory'} ({err.strerror}); what was saved "
              f"before is intact: free space or fix the permissions, then resume with ckpt_path=auto "
              f"hydra.run.dir={directory}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        rundir.release(directory)


def train_and_test(cfg: DictConfig) -> dict:
    datamodule, module, trainer = build_or_exit(cfg)
    if rundir.is_rank_zero():
        save_effective_config(cfg)  # a resumed run's config, now that it passed its checks
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    preemption = next(c for c in trainer.callbacks if isinstance(c, PreemptionCheckpoint))
    preemption.install()
    try:
        return fit_and_test(cfg, datamodule, module, trainer, preemption)
    finally:
        preemption.uninstall()  # also after a failed write: the caller's signal handlers come back


def fit_and_test(cfg: DictConfig, datamodule, module, trainer: L.Trainer, preemption: PreemptionCheckpoint) -> dict:
    start = time.time()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    except Diverged as err:  # the last finite weights are restored: keep them, report, exit non-zero
        save_final_checkpoint(trainer)
        results = {"steps": trainer.global_step, "diverged": True, "rollbacks": module.divergence.rollbacks,
                   "nonfinite_steps": int(module.nonfinite_steps), "test_bpd": None}
        if trainer.is_global_zero:
            write_results(cfg, results)
        preemption.uninstall()
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(3) from None
    fit_seconds = time.time() - start
    if preemption.exit_code is not None:  # last.ckpt is written; no test, so the job ends quickly
        preemption.uninstall()
        print(f"stopped by signal {preemption.signum} at step {trainer.global_step}; resume with "
              f"ckpt_path={preemption.saved}", file=sys.stderr)
        raise SystemExit(preemption.exit_code)
    save_final_checkpoint(trainer)
    results = {"steps": trainer.global_step, "wall_time_s": round(fit_seconds, 1), "data": datamodule.source,
               "precision": str(trainer.precision),
               "nonfinite_steps": int(module.nonfinite_steps), "rollbacks": module.divergence.rollbacks}
    if cfg.test_after_fit:
        metrics = trainer.test(module, datamodule=datamodule, verbose=False)
        results["test_bpd"] = metrics[0]["test/bpd"]
        results["test_nonfinite"] = int(metrics[0]["test/nonfinite"])
        results["test_images"] = int(metrics[0]["test/images"])
        for name in module.model.capabilities.eval_figures:  # a family's own figures, e.g. test_neg_elbo
            if f"test/{name}" in metrics[0]:
                results[f"test_{name}"] = metrics[0][f"test/{name}"]
        if trainer.is_global_zero:
            results.update(module.eval_model.final_results(results))  # e.g. distillation's sampling speedup
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and not trainer.fast_dev_run:
        results["last_checkpoint"] = checkpoint.last_model_path or None
        results["best_checkpoint"] = checkpoint.best_model_path or None
    preemption.uninstall()
    if trainer.is_global_zero:
        path = write_results(cfg, results)
        log.info("results: %s", json.dumps(finite_or_null(results)))
        if "test_bpd" in results:
            print(f"test bits/dim: {results['test_bpd']:.4f} after {results['steps']} steps "
                  f"({fit_seconds / 60:.1f} min); written to {path}")
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        cfg = resumed_config(cfg)  # a resume of this run directory: its saved config, this command on top
        check_seed("seed", cfg.get("seed"))  # before run() seeds anything (Lightning would pick a random seed)
        results = run(cfg)
    except ConfigError as err:  # also found once fit has the data (damaged files, a batch larger than the data set)
        exit_with_config_error(err)
    return results.get("test_bpd")  # lets Hydra sweepers optimise it


if __name__ == "__main__":
    hydra_entry(main, "train", Path(__file__).resolve().parent / "conf")  # --help; composition errors: one line
