"""Scripts that reuse finished runs (vae_table.py, learning_curve.py) reuse one only when it was trained
with the settings asked for now: a run at fewer steps is resumed (vae_table) or refused in one line, and
a run with other settings is refused in one line; the docstring examples parse."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from glow.run_config import settings_differ
from scripts.fault_drill import folder
from tests.conftest import REPO, require_mnist


def test_the_learning_curve_examples_parse():
    doc = (REPO / "scripts" / "learning_curve.py").read_text().split('"""')[1]
    for line in doc.splitlines():
        if line.strip().startswith("python scripts/learning_curve.py"):
            words = re.findall(r"'[^']*'|\S+", line.split("#")[0])[2:]
            OverridesParser.create().parse_overrides([w.strip("'") for w in words])  # raises on a grammar error


def test_settings_differ_names_what_the_run_was_trained_with(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(
        {"seed": 0, "trainer": {"max_steps": 400}, "module": {"lr": 0.002},
         "callbacks": {"curve": {"eval_steps": [100, 400]}}}))
    (run / ".hydra" / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": {"runtime": {"choices": {"model": "vae"}}}}))
    same = ["seed=0", "trainer.max_steps=400", "module.lr=2e-3", "model=vae", "+callbacks.curve.eval_steps=[100,400]"]
    assert settings_differ(run, same) == []
    assert settings_differ(run, ["trainer.max_steps=800", "model=glow"]) == [("trainer.max_steps", 400, 800),
                                                                             ("model", "vae", "glow")]
    assert settings_differ(run, ["+callbacks.curve.eval_steps=[100,800]"])[0][0] == "callbacks.curve.eval_steps"
    assert settings_differ(tmp_path / "bare", same)[0][0] == ".hydra/config.yaml"  # cannot be told: not reused


def script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.slow
def test_learning_curve_refuses_a_finished_run_of_other_settings(tmp_path):
    data = folder(tmp_path / "data")
    tiny = ["data=imagefolder", f"data.path={data}", "data.image_size=8", "data.val_fraction=0.2", "model.levels=2",
            "model.steps=2", "model.hidden_channels=8", "data.batch_size=8", "data.eval_batch_size=16",
            "module.warmup_steps=2", "module.init_batch_size=16", "~callbacks.progress"]
    overrides = "overrides=[" + ",".join(f'"{o}"' for o in tiny) + "]"
    common = ["variants=[default]", "seeds=[0]", overrides, f"output={tmp_path / 'lc'}"]
    first = script("learning_curve.py", *common, "max_steps=4", "eval_steps=[2,4]", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = json.loads((tmp_path / "lc.json").read_text())
    assert [r["step"] for r in rows] == [2, 4]
    log = tmp_path / "lc_runs" / "default_seed0.log"
    before = log.stat().st_mtime_ns
    line = one_line(script("learning_curve.py", *common, "max_steps=6", "eval_steps=[2,6]", cwd=tmp_path))
    assert "default_seed0 was trained with trainer.max_steps=4, and this command asks trainer.max_steps=6" in line
    again = script("learning_curve.py", *common, "max_steps=4", "eval_steps=[2,4]", cwd=tmp_path)
    assert again.returncode == 0 and log.stat().st_mtime_ns == before  # reused: nothing trained again


@pytest.mark.slow
def test_vae_table_resumes_to_more_steps_and_refuses_other_settings(tmp_path):
    require_mnist()
    tiny = ["+data.limit_train=64", "+data.limit_test=32", "data.batch_size=16", "data.eval_batch_size=32",
            "model.hidden=16", "model.latent_dim=4", "module.warmup_steps=2", "module.kl_warmup_steps=0",
            "module.ema_decay=null", "module.init_batch_size=16", "trainer.val_check_interval=2",
            "trainer.limit_val_batches=1", "callbacks.samples.every_n_steps=1000", "data.num_workers=0"]
    common = ["--posteriors", "none", "--iw-samples", "2", "--logger", "none", "--out", str(tmp_path / "t")]
    first = script("vae_table.py", *common, "--steps", "3", *tiny, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    more = script("vae_table.py", *common, "--steps", "5", *tiny, cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-2000:]
    assert json.loads((tmp_path / "t" / "none_seed0" / "results.json").read_text())["steps"] == 5
    assert "trainer.max_steps=5" in (tmp_path / "t" / "vae_table.md").read_text()
    line = one_line(script("vae_table.py", *common, "--steps", "5", "--flow-length", "2", *tiny, cwd=tmp_path))
    assert "none_seed0 was trained with model.flow_length=4, and this table asks model.flow_length=2" in line
    fewer = one_line(script("vae_table.py", *common, "--steps", "4", *tiny, cwd=tmp_path))
    assert "trainer.max_steps=5" in fewer and "trainer.max_steps=4" in fewer
