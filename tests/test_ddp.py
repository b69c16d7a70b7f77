"""DDP with 2 CPU processes: identical ActNorm init on both ranks; the test split counted exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, synthetic_folder):
    env = dict(os.environ, PYTHONPATH=str(REPO), WANDB_MODE="offline")
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "ddp_worker.py"), str(tmp_path), str(synthetic_folder)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = torch.load(tmp_path / "actnorm_rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "actnorm_rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys() and len(rank0) > 0
    assert any(".net." in name for name in rank0), "the coupling networks' inner ActNorms were not compared"
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
        assert rank0[name].abs().max() > 0, "ActNorm was not initialised"
    metrics = torch.load(tmp_path / "test_metrics.pt", weights_only=True)
    # 15 test images over 2 ranks: unpadded shards hold 8 + 7; a padded sampler would count 16
    assert metrics["test_images"] == 15
    assert torch.isfinite(torch.tensor(metrics["test_bpd"]))
