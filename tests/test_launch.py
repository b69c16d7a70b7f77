"""The launch scripts: the project's interpreter (never a bare ``python``), and the SLURM script
starts or resumes with ckpt_path=auto, asks for SIGUSR1 90 s before the limit and requeues the job
when train.py stopped on a signal with a resumable checkpoint. Run with stand-ins for srun, scontrol
and the interpreter, which record what they were given."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

RECORDER = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$LOG"
exit "${EXIT_CODE:-0}"
"""


def stand_ins(tmp_path: Path) -> tuple[dict, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("fake_python", "scontrol"):
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "srun").write_text('#!/usr/bin/env bash\nSLURM_PROCID=${FAKE_PROCID:-0} "$@"\n')  # one task
    (bin_dir / "srun").chmod(0o755)
    log = tmp_path / "log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log), "PYTHON": str(bin_dir / "fake_python"),
           "SLURM_JOB_ID": "77", "SLURM_NTASKS_PER_NODE": "8", "SLURM_JOB_NUM_NODES": "2", "SLURM_SUBMIT_DIR": str(tmp_path)}
    return env, log


def test_launch_ddp_uses_the_projects_interpreter(tmp_path):
    env, log = stand_ins(tmp_path)
    subprocess.run(["bash", str(REPO / "scripts" / "launch_ddp.sh"), "2", "seed=3"], env=env, check=True)
    assert log.read_text().split()[:3] == ["fake_python", str(REPO / "train.py"), "trainer=ddp"]
    assert "seed=3" in log.read_text()
    assert "exec python " not in (REPO / "scripts" / "launch_ddp.sh").read_text()


@pytest.mark.parametrize("code, requeued", [(0, False), (138, True), (143, True), (2, False)])
def test_launch_slurm_starts_or_resumes_and_requeues_after_a_signal(tmp_path, code, requeued):
    text = (REPO / "scripts" / "launch_slurm.sh").read_text()
    assert "#SBATCH --signal=USR1@90" in text and "#SBATCH --requeue" in text
    env, log = stand_ins(tmp_path)
    done = subprocess.run(["bash", str(REPO / "scripts" / "launch_slurm.sh"), "experiment=cifar10_glow"],
                          env={**env, "EXIT_CODE": str(code)})
    assert done.returncode == code
    calls = log.read_text().splitlines()
    train = next(c for c in calls if c.startswith("fake_python"))
    assert "ckpt_path=auto" in train and "hydra.run.dir=outputs/slurm/77" in train and "experiment=cifar10_glow" in train
    assert "hydra.output_subdir=null" not in train  # task 0 keeps the run's .hydra/
    assert ("scontrol requeue 77" in calls) == requeued


def test_launch_slurm_lets_only_task_0_write_the_runs_config(tmp_path):
    env, log = stand_ins(tmp_path)
    subprocess.run(["bash", str(REPO / "scripts" / "launch_slurm.sh")], env={**env, "FAKE_PROCID": "3"}, check=True)
    assert "hydra.output_subdir=null" in log.read_text()
