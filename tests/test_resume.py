"""Resuming: the saved config with this command's overrides on top, what must match the checkpoint
(module.n_bits, the optimiser, EMA on/off), ckpt_path=auto end to end, and a run directory that stops
taking writes."""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import train
from glow import rundir
from glow.errors import CheckpointError, ConfigError
from glow.resume import check_resume_hparams, resumed_config, save_effective_config
from glow.run_config import reapply
from scripts.fault_drill import TINY, folder
from tests.conftest import REPO, compose_train

SAVED = ["data=imagefolder", "data.path=/images/of/the/run", "model.steps=3", "module.lr=2e-3", "trainer.max_steps=4"]
CHOICES = {"data": "imagefolder", "experiment": "mnist", "model": "glow_small", "debug": "default"}


def saved_run(run: Path) -> None:
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(compose_train(run, SAVED)))
    (run / ".hydra" / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": {"runtime": {"choices": CHOICES}}}))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")


def test_overrides_go_on_top_of_the_saved_config(tmp_path):
    saved = compose_train(tmp_path, SAVED)

    def on_top(overrides):
        return reapply(saved, compose_train(tmp_path, overrides), overrides, CHOICES)

    cfg = on_top(["trainer.max_steps=8"])
    assert (cfg.trainer.max_steps, cfg.model.steps, cfg.data.path, cfg.module.lr) == (8, 3, "/images/of/the/run", 2e-3)
    assert on_top(["module.lr=1e-3"]).module.lr == 1e-3  # a key given now wins, even at its default
    assert on_top(["data=imagefolder", "trainer.max_steps=8"]).data.path == "/images/of/the/run"  # the same group
    assert on_top(["data=imagefolder", "data.path=/moved"]).data.path == "/moved"  # (Hydra composes the group first)
    assert on_top(["data=mnist"]).data.name == "mnist"  # another data set: the node composed now
    assert "progress" not in on_top(["~callbacks.progress"]).callbacks
    assert on_top(["+eval.new_key=3"]).eval.new_key == 3
    assert on_top(["experiment=mnist"]).model.steps == 3  # the experiment the run was composed with: kept
    with pytest.raises(ConfigError, match="experiment=cifar10_glow is not allowed here: the run was composed with "
                                          "experiment=mnist"):
        on_top(["experiment=cifar10_glow"])


def test_a_resume_of_its_own_directory_reuses_the_saved_config_and_rewrites_it_once_checked(tmp_path):
    run = tmp_path / "run"
    saved_run(run)
    before = (run / ".hydra" / "config.yaml").read_text()
    now = ["ckpt_path=auto", "trainer.max_steps=9"]
    try:
        cfg = resumed_config(compose_train(run, now), now)
        assert (cfg.trainer.max_steps, cfg.data.path, cfg.model.steps) == (9, "/images/of/the/run", 3)
        assert (run / ".hydra" / "config.yaml").read_text() == before  # untouched until the run passed its checks
        save_effective_config(cfg)
        assert OmegaConf.load(run / ".hydra" / "config.yaml").trainer.max_steps == 9
    finally:
        rundir.release(run)
    fresh = compose_train(tmp_path / "fresh", now)  # nothing to resume: the config as given
    assert resumed_config(fresh, now) is fresh
    rundir.release(tmp_path / "fresh")


@pytest.mark.parametrize("key, saved, now, words", [
    ("n_bits", 5, 8, "module.n_bits=5 and this run has module.n_bits=8"),
    ("optimizer", "adamax", "adam", "module.optimizer=adamax and this run has module.optimizer=adam"),
    ("ema_decay", 0.999, None, "module.ema_decay=0.999 and this run has module.ema_decay=null"),
])
def test_what_the_checkpoint_state_depends_on_must_match(key, saved, now, words):
    hparams = {"n_bits": 8, "optimizer": "adamax", "ema_decay": None, "lr": 1e-3}
    checkpoint = {"hyper_parameters": {**hparams, key: saved}}
    with pytest.raises(CheckpointError, match=f"ckpt_path='c.ckpt' was saved with {words}"):
        check_resume_hparams(checkpoint, {**hparams, key: now}, "c.ckpt")
    check_resume_hparams({"hyper_parameters": {**hparams, key: now}}, {**hparams, key: now, "lr": 5.0}, "c.ckpt")
    check_resume_hparams({"hyper_parameters": {**hparams, "ema_decay": 0.9}}, {**hparams, "ema_decay": 0.99}, "c")
    check_resume_hparams({"hyper_parameters": {}}, hparams, "old.ckpt")  # an older checkpoint: the defaults


def one_line_exit(capsys, fn, *args) -> str:
    with pytest.raises(SystemExit) as info:
        fn(*args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.slow
def test_changed_n_bits_or_optimizer_on_resume_is_one_line_and_the_checkpoint_is_kept(tmp_path, capsys):
    data = folder(tmp_path / "data")
    common = ["data=imagefolder", f"data.path={data}", "data.val_fraction=0.2", *TINY[:8]]
    train.run(compose_train(tmp_path / "run", common + ["trainer.max_steps=3", "module.n_bits=5"]))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    capsys.readouterr()
    err = one_line_exit(capsys, train.run, compose_train(tmp_path / "run", common + ["trainer.max_steps=5",
                                                                                    "ckpt_path=last"]))
    assert "module.n_bits=5 and this run has module.n_bits=8" in err and str(last) in err
    err = one_line_exit(capsys, train.run, compose_train(tmp_path / "run", common + [
        "trainer.max_steps=5", "ckpt_path=last", "module.n_bits=5", "module.optimizer=adam"]))
    assert "module.optimizer=adamax and this run has module.optimizer=adam" in err
    assert last.read_bytes() == before
    results = train.run(compose_train(tmp_path / "run", common + ["trainer.max_steps=5", "ckpt_path=last",
                                                                 "module.n_bits=5", "module.lr=5e-4"]))
    assert results["steps"] == 5  # lr and max_steps may change


def cli(run_dir: Path, *args: str, limit: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    limit_size = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))) if limit else None
    return subprocess.run([sys.executable, str(REPO / "train.py"), f"hydra.run.dir={run_dir}", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600, preexec_fn=limit_size)


@pytest.mark.slow
def test_ckpt_path_auto_starts_then_resumes_to_the_later_max_steps(tmp_path):
    data = folder(tmp_path / "data")
    run = tmp_path / "run"
    given = ["data=imagefolder", f"data.path={data}", *TINY, "ckpt_path=auto"]
    first = cli(run, *given, "trainer.max_steps=4")
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.splitlines()[0] == f"run directory: {run}"
    assert "ckpt_path" not in first.stderr  # no Lightning warnings about it on a fresh run
    assert json.loads((run / "results.json").read_text())["steps"] == 4
    second = cli(run, *given, "trainer.max_steps=8")
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.splitlines()[0] == f"run directory: {run} (resuming {run}/checkpoints/last.ckpt)"
    assert json.loads((run / "results.json").read_text())["steps"] == 8
    # the run's saved config is reused: no data keys or tiny-model keys repeated
    third = cli(run, "ckpt_path=auto", "trainer.max_steps=10")
    assert third.returncode == 0, third.stderr[-2000:]
    assert json.loads((run / "results.json").read_text())["steps"] == 10
    assert OmegaConf.load(run / ".hydra" / "config.yaml").data.path == str(data)
    assert not list(run.glob("checkpoints/last-v*.ckpt"))


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    data = folder(tmp_path / "data")
    run = tmp_path / "run"
    given = ["data=imagefolder", f"data.path={data}", *TINY]
    assert cli(run, *given, "trainer.max_steps=4").returncode == 0
    last = run / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    full = cli(run, *given, "trainer.max_steps=8", "ckpt_path=auto", limit=last.stat().st_size // 2)  # ulimit -f
    assert full.returncode == 2, full.stderr[-2000:]
    assert "Traceback" not in full.stderr
    line = full.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cannot write ") and str(run) in line and "File too large" in line
    assert last.read_bytes() == before and torch.load(last, weights_only=True)["global_step"] == 4
    assert not list(run.rglob(".*.tmp"))


@pytest.mark.slow
def test_a_directory_that_refuses_writes_is_one_line(tmp_path, capsys, monkeypatch):
    import glow.checkpoints

    data = folder(tmp_path / "data")
    common = ["data=imagefolder", f"data.path={data}", "data.val_fraction=0.2", *TINY[:8]]
    saves = []
    original = glow.checkpoints.atomic_save

    def read_only_after_two(obj, path):
        saves.append(path)
        if len(saves) > 2:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        original(obj, path)

    monkeypatch.setattr(glow.checkpoints, "atomic_save", read_only_after_two)
    with pytest.raises(SystemExit) as info:
        train.run(compose_train(tmp_path / "run", common + ["trainer.max_steps=8",
                                                            "callbacks.periodic_checkpoint.every_n_train_steps=1"]))
    assert info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: cannot write {tmp_path / 'run'}") and "Permission denied" in line
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] >= 1


def test_the_on_exception_checkpoint_saves_after_progress_but_never_after_a_failed_write(tmp_path):
    from glow.checkpoint_callbacks import SafeOnExceptionCheckpoint

    saved = []

    class Trainer:
        global_step = 3

        def save_checkpoint(self, path, weights_only=None):
            saved.append(path)

    callback = SafeOnExceptionCheckpoint(tmp_path)
    callback.on_train_start(Trainer(), None)
    Trainer.global_step = 5
    callback.on_exception(Trainer(), None, OSError(errno.ENOSPC, "No space left on device"))
    assert saved == []  # the disk is full: writing more would only fail again
    callback.on_exception(Trainer(), None, RuntimeError("a crash after two steps"))
    assert saved == [str(tmp_path / "on_exception.ckpt")]
