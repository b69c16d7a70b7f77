"""Issue 9: checkpoints stay inside their run, atomic saves, one run one directory, pre-emption,
bad data, bad checkpoints and values, divergence. Each test failed on the code before it."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

import train
from glow.checkpoint_callbacks import SafeOnExceptionCheckpoint
from glow.checkpoints import CheckpointError, read_checkpoint, remove_stale_temp_files
from glow.data import ImageDataModule
from scripts.fault_drill import craft_path_deleting_checkpoint
from tests.conftest import REPO, compose_train

TINY = ["model.levels=2", "model.steps=2", "model.hidden_channels=8", "data.image_size=8", "data.batch_size=8",
        "module.warmup_steps=2", "module.init_batch_size=16", "trainer.val_check_interval=4", "data.eval_batch_size=16",
        "callbacks.samples.every_n_steps=1000"]


def make_folder(root: Path, modes=("RGB",), per_class: int = 12, test_per_class: int = 4) -> Path:
    """<root>/{train,test}/{a,b}/NN.png of 8x8 images; the i-th file of a class gets modes[i % len]."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                im = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert(modes[i % len(modes)])
                im.save(folder / f"{i:02d}.png")
    return root


def folder_overrides(folder: Path) -> list[str]:
    return ["data=imagefolder", f"data.path={folder}", "data.val_fraction=0.2"] + TINY


def one_line_exit(capsys, fn, *args) -> str:
    with pytest.raises(SystemExit) as info:
        fn(*args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# -- bad config values ----------------------------------------------------------------------------
@pytest.mark.parametrize("override", ["module.lr=inf", "module.lr=nan", "module.grad_clip_norm=nan",
                                      "module.lr=-1", "module.max_nonfinite_steps=0", "data.val_fraction=0.0"])
def test_non_finite_and_non_positive_values_are_config_errors(tmp_path, capsys, override):
    err = one_line_exit(capsys, train.run, compose_train(tmp_path, [override]))
    assert override.split("=")[0] in err and "is not allowed" in err
    assert not (tmp_path / "checkpoints").exists()


# -- bad checkpoints ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good")
    folder = make_folder(root / "data")
    train.run(compose_train(root / "run", folder_overrides(folder) + ["trainer.max_steps=2"]))
    return root / "run" / "checkpoints" / "last.ckpt"


class Payload:
    """Unpickling it would run ``touch <marker>``: the marker must never appear."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _bad_checkpoint(kind: str, good: Path, where: Path) -> Path:
    path = where / f"{kind}.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "poisoned":
        torch.save({"state_dict": {}, "hyper_parameters": {"model_config": {}}, "x": Payload(where / "pwned")}, path)
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind,words", [("empty", "is empty (0 bytes)"), ("truncated", "is truncated or corrupt"),
                                       ("poisoned", "is not a checkpoint of ours"),
                                       ("foreign", "is not a checkpoint of ours"),
                                       ("mismatched", "another model config: hidden_channels 8 != 16")])
def test_bad_checkpoint_is_one_line_naming_the_file_and_writes_nothing(tmp_path, capsys, good_ckpt, kind, words):
    folder = good_ckpt.parents[2] / "data"
    path = good_ckpt if kind == "mismatched" else _bad_checkpoint(kind, good_ckpt, tmp_path)
    overrides = folder_overrides(folder) + [f"ckpt_path={path}"]
    if kind == "mismatched":
        overrides.append("model.hidden_channels=16")
    err = one_line_exit(capsys, train.run, compose_train(tmp_path / "run", overrides))
    assert str(path) in err and words in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "pwned").exists()
    if kind != "mismatched":  # the API and the other entry points say the same
        with pytest.raises(CheckpointError, match="ckpt_path="):
            import glow
            glow.load(str(path))


# -- checkpoints stay inside their run ------------------------------------------------------------
@pytest.mark.slow
def test_crafted_callback_state_cannot_delete_files(tmp_path, good_ckpt):
    victim_file, victim_dir = tmp_path / "victim.txt", tmp_path / "victim_dir"
    victim_file.write_text("precious")
    victim_dir.mkdir()
    (victim_dir / "inner.txt").write_text("precious")
    crafted = craft_path_deleting_checkpoint(good_ckpt, victim_file, victim_dir, tmp_path / "crafted.ckpt")
    folder = good_ckpt.parents[2] / "data"
    train.run(compose_train(tmp_path / "run", folder_overrides(folder) + ["trainer.max_steps=6",
                                                                          f"ckpt_path={crafted}"]))
    assert victim_file.read_text() == "precious" and (victim_dir / "inner.txt").read_text() == "precious"


_WRITER = """
import os, sys, time, torch
import glow.checkpoints as checkpoints

path, ready, phase = sys.argv[1:4]
checkpoints.atomic_save({"version": torch.tensor(1), "w": torch.zeros(1000)}, path)  # the good, older one


def stop_here():  # tell the parent where we are, then wait for its SIGKILL
    with open(ready, "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(1)


class HalfThenStop:  # the new checkpoint's bytes, half of them on disk, then the kill
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        os.fsync(self.f.fileno())
        stop_here()

    def __getattr__(self, name):
        return getattr(self.f, name)


if phase == "mid-write":
    checkpoints.open = lambda *a, **k: HalfThenStop(open(*a, **k))
else:  # "before-rename": the whole new file written and synced, not yet renamed over the old one
    os.replace = lambda src, dst: stop_here()
checkpoints.atomic_save({"version": torch.tensor(2), "w": torch.ones(2_000_000)}, path)
"""


@pytest.mark.slow
@pytest.mark.parametrize("phase,tmpdir", [("mid-write", "/dev/shm"), ("before-rename", None)])
def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path, phase, tmpdir):
    """A writer is SIGKILLed at a known point of atomic_save (it blocks there and says so): half-way
    through writing the new file, or after writing it and before the rename. The old checkpoint is
    whole and loads, the dead writer's temp file is what is left, and it is cleaned up as stale.
    $TMPDIR on another filesystem (/dev/shm) changes nothing: the temp file is beside the checkpoint."""
    if tmpdir and not os.path.isdir(tmpdir):
        pytest.skip(f"{tmpdir} absent")
    path, ready = tmp_path / "ckpt" / "last.ckpt", tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": tmpdir or str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(ready), phase], env=env)
    try:
        deadline = time.time() + 120
        while not ready.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert ready.exists(), f"the writer never reached the {phase} point (exit code {proc.poll()})"
        (temp,) = [p for p in path.parent.iterdir() if p.name != "last.ckpt"]
        assert temp.name == f".last.ckpt.{proc.pid}.tmp"
        full_size = 2_000_000 * 4
        assert (temp.stat().st_size < full_size) if phase == "mid-write" else (temp.stat().st_size > full_size)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    old = torch.load(path, weights_only=True)
    assert old["version"] == 1 and torch.equal(old["w"], torch.zeros(1000))
    assert [p.name for p in remove_stale_temp_files(path.parent)] == [temp.name]
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_on_exception_checkpoint_saves_after_progress_and_never_before(tmp_path):
    """A failed resume must not overwrite a good on_exception.ckpt with an untrained one, and a run
    that made progress must save it (tests/test_checkpoint_safety.py runs it in a real Trainer)."""
    class Trainer:
        def __init__(self, step):
            self.global_step, self.saved = step, []

        def save_checkpoint(self, path, weights_only=None):
            self.saved.append(path)

    callback = SafeOnExceptionCheckpoint(tmp_path)
    before, at_start, after = Trainer(41), Trainer(41), Trainer(42)
    callback.on_exception(before, None, RuntimeError("before training"))
    callback.on_train_start(Trainer(41), None)
    callback.on_exception(at_start, None, RuntimeError("no step made since the resume"))
    callback.on_exception(after, None, RuntimeError("one step after the resume"))
    assert before.saved == at_start.saved == []
    assert after.saved == [str(tmp_path / "on_exception.ckpt")]


# -- one run, one directory -----------------------------------------------------------------------
@pytest.mark.slow
def test_run_ids_differ_between_processes():
    code = "from glow.rundir import run_id; print(run_id())"
    env = {k: v for k, v in os.environ.items() if k not in ("GLOW_RUN_ID", "SLURM_JOB_ID")}
    env["PYTHONPATH"] = str(REPO)
    ids = {subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() for _ in range(2)}
    assert len(ids) == 2


@pytest.mark.slow
def test_used_run_directory_is_refused_and_ckpt_path_last_resumes(tmp_path, capsys, good_ckpt):
    run_dir = good_ckpt.parents[1]
    folder = good_ckpt.parents[2] / "data"
    before = good_ckpt.read_bytes()
    err = one_line_exit(capsys, train.run, compose_train(run_dir, folder_overrides(folder) + ["trainer.max_steps=4"]))
    assert "already holds a run" in err and "ckpt_path=auto" in err
    assert good_ckpt.read_bytes() == before
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    results = train.run(compose_train(copy, folder_overrides(folder) + ["trainer.max_steps=4", "ckpt_path=last"]))
    assert results["steps"] == 4


# -- pre-emption ----------------------------------------------------------------------------------
class SignalAt(L.Callback):
    def __init__(self, step, signum=signal.SIGTERM):
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class Losses(L.Callback):
    def __init__(self):
        self.losses = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


def _run_with(cfg, *callbacks):
    original = train.build

    def build(cfg):
        datamodule, module, trainer = original(cfg)
        trainer.callbacks.extend(callbacks)
        return datamodule, module, trainer

    train.build = build
    try:
        return train.run(cfg)
    finally:
        train.build = original


@pytest.mark.slow
@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_exits_non_zero_with_a_checkpoint_that_resumes_exactly(tmp_path, synthetic_folder, signum, code):
    common = folder_overrides(make_folder(tmp_path / "data")) + ["trainer.deterministic=true", "trainer.max_steps=6"]
    straight = Losses()
    _run_with(compose_train(tmp_path / "a", common), straight)
    with pytest.raises(SystemExit) as info:
        _run_with(compose_train(tmp_path / "b", common), SignalAt(3, signum))
    assert info.value.code == code
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last)["global_step"] == 4  # the step in flight finishes, then it stops
    resumed = Losses()
    _run_with(compose_train(tmp_path / "b", common + ["ckpt_path=last"]), resumed)
    assert sorted(resumed.losses) == [5, 6]
    for step in resumed.losses:
        assert resumed.losses[step] == pytest.approx(straight.losses[step], abs=1e-6)


# -- weights_only everywhere ----------------------------------------------------------------------
@pytest.mark.slow
def test_every_checkpoint_load_is_weights_only_without_warning(tmp_path, good_ckpt, caplog, monkeypatch):
    calls = []
    original = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    folder = good_ckpt.parents[2] / "data"
    with caplog.at_level(logging.INFO):
        train.run(compose_train(tmp_path, folder_overrides(folder) + ["trainer.max_steps=4", f"ckpt_path={good_ckpt}"]))
    assert calls and all(w is True for w in calls), calls
    assert "weights_only" not in caplog.text


# -- bad data -------------------------------------------------------------------------------------
def test_greyscale_first_and_mixed_mode_folder_gives_three_channels(tmp_path):
    folder = make_folder(tmp_path, modes=("L", "RGBA", "P", "RGB", "LA"))
    dm = ImageDataModule("imagefolder", path=str(folder), batch_size=4, image_size=8, num_workers=0)
    assert dm.image_shape == (3, 8, 8)
    dm.setup()
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (3, 8, 8)
    grey = ImageDataModule("imagefolder", path=str(folder), batch_size=4, image_size=8, num_workers=0, channels=1)
    assert grey.image_shape == (1, 8, 8)


def test_empty_test_split_is_one_line_before_training(tmp_path):
    folder = make_folder(tmp_path, test_per_class=0)
    with pytest.raises(ValueError, match="the test split holds no images"):
        ImageDataModule("imagefolder", path=str(folder), batch_size=4, image_size=8)


def test_too_many_unreadable_files_stop_before_training(tmp_path):
    folder = make_folder(tmp_path)
    for i in range(3):
        (folder / "train" / "a" / f"{i:02d}.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"data.max_bad_fraction=0.01 is exceeded: 3 of 32 image files .*00\.png"):
        ImageDataModule("imagefolder", path=str(folder), batch_size=4, image_size=8)


@pytest.mark.slow
def test_corrupt_test_image_is_named_skipped_and_results_written(tmp_path):
    folder = make_folder(tmp_path / "data")
    bad = folder / "test" / "a" / "00.png"
    bad.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=f"1 of 32 image files .*{bad}"):
        train.run(compose_train(tmp_path / "run", folder_overrides(folder) + ["trainer.max_steps=2",
                                                                              "data.max_bad_fraction=0.05"]))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test_images"] == 7


# -- divergence -----------------------------------------------------------------------------------
class PoisonFrom(L.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step >= self.step and not hasattr(module.model, "_poisoned"):
            original = module.model.log_prob
            module.model.log_prob = lambda *a, **k: original(*a, **k) * float("nan")
            module.model._poisoned = True


@pytest.mark.slow
def test_divergence_rolls_back_then_stops_with_valid_results(tmp_path, capsys):
    folder = make_folder(tmp_path / "data")
    cfg = compose_train(tmp_path / "run", folder_overrides(folder) + ["trainer.max_steps=40",
                                                                      "module.max_nonfinite_steps=2"])
    with pytest.raises(SystemExit) as info:
        _run_with(cfg, PoisonFrom(5))
    assert info.value.code == 3
    out = capsys.readouterr()
    assert "rollback 3 of 3" in out.out and "training diverged" in out.err
    results = json.loads((tmp_path / "run" / "results.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"{c} in results.json"))
    assert results["diverged"] and results["rollbacks"] == 3 and results["test_bpd"] is None
    last = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_results_json_has_null_and_a_count_for_nan():
    out = train.finite_or_null({"test_bpd": float("nan"), "steps": 3})
    assert out == {"test_bpd": None, "steps": 3, "nonfinite_figures": ["test_bpd"]}
    json.dumps(out, allow_nan=False)
