"""The entry points as a user runs them (each Hydra one is also checked in process: tests/test_entry_points.py):
--help prints its page and runs nothing (the benchmark's within 30 s); an unknown key, a missing or damaged
data set, an image of another size, a batch larger than the data and a bad sample count each end with exit
code 2 and exactly one stderr line naming the key or file, before any work."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, require_mnist

pytestmark = pytest.mark.slow
ENTRY_POINTS = {"train": "train.py", "sample": "sample.py", "evaluate": "scripts/evaluate.py",
                "evaluate_inpainting": "scripts/evaluate_inpainting.py", "demo": "scripts/demo.py",
                "benchmark": "scripts/benchmark.py"}
TINY = ["debug=default", "logger=none", "data.num_workers=0", "trainer.max_steps=2"]


def run(script: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def one_line_exit_2(proc: subprocess.CompletedProcess, *names: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("config error: "), proc.stderr[-3000:]
    assert all(name in lines[0] for name in names), lines[0]
    return lines[0]


@pytest.mark.parametrize("name", ["train", "benchmark"])
def test_help_prints_the_page_and_runs_nothing(tmp_path, name):
    start = time.time()
    proc = run(ENTRY_POINTS[name], "--help", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"usage: python {ENTRY_POINTS[name]}") and "exit codes:" in proc.stdout
    assert time.time() - start < 30 or name != "benchmark"
    assert not (tmp_path / "run").exists() and not (tmp_path / "outputs").exists()  # nothing composed or written


@pytest.mark.parametrize("name", ["train", "benchmark"])
def test_an_unknown_key_is_one_line(tmp_path, name):
    one_line_exit_2(run(ENTRY_POINTS[name], "modle.steps=2", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path),
                    "modle.steps")


def test_a_missing_data_set_names_its_layout_and_the_download_flag(tmp_path):
    proc = run("train.py", "data=cifar10", "data.download=false", f"data.root={tmp_path}",
               f"hydra.run.dir={tmp_path / 'run'}", *TINY)
    one_line_exit_2(proc, f"{tmp_path}/cifar-10-batches-py/", "data.download=true")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_truncated_mnist_file_stops_the_run_by_name(tmp_path):
    mnist = require_mnist()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (mnist / "MNIST" / "raw").iterdir():
        (raw / f.name).write_bytes(f.read_bytes()[: 100_000] if f.name.startswith("t10k-images") else f.read_bytes())
    proc = run("train.py", f"data.root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}", *TINY)
    one_line_exit_2(proc, str(raw / "t10k-images-idx3-ubyte"), "corrupt")


def image_folder(root: Path, odd: tuple[int, int] | None = None) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 2)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / split / label / f"{i}.png")
    if odd:
        Image.new("RGB", odd).save(root / "test" / "b" / "x.png")
    return root


def test_a_test_image_of_another_size_stops_the_run_before_training(tmp_path):
    data = image_folder(tmp_path / "data", odd=(10, 10))
    proc = run("train.py", "data=imagefolder", f"data.path={data}", "data.image_size=null",
               f"hydra.run.dir={tmp_path / 'run'}", *TINY)
    one_line_exit_2(proc, str(data / "test" / "b" / "x.png"), "data.image_size")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_batch_larger_than_the_data_set_is_one_line(tmp_path):
    data = image_folder(tmp_path / "data")
    proc = run("train.py", "data=imagefolder", f"data.path={data}", "data.image_size=8", "data.batch_size=64",
               f"hydra.run.dir={tmp_path / 'run'}", *TINY)
    one_line_exit_2(proc, "data.batch_size=64")


def test_sample_refuses_an_unbounded_count(tmp_path):
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"")
    one_line_exit_2(run("sample.py", f"ckpt_path={ckpt}", "n=10000000", f"hydra.run.dir={tmp_path}"), "n=10000000")


def test_results_json_names_the_data_set_actually_used(tmp_path):
    """A missing MNIST falls back to scikit-learn's digits (with a warning): results.json says which was used."""
    import json

    proc = run("train.py", f"data.root={tmp_path / 'empty'}", "data.download=false",
               f"hydra.run.dir={tmp_path / 'run'}", *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "falling back" in proc.stderr
    assert json.loads((tmp_path / "run" / "results.json").read_text())["data"] == "digits"
