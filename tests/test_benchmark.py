"""scripts/benchmark.py end to end on a tiny row: the fields the issue asks for, the FLOP and GEMM
figures, and a one-line config error. Timings themselves are not asserted (benchmarks measure speed,
tests do not)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "benchmark.py"
TINY = ["suite=one", "model.levels=2", "model.steps=1", "model.hidden_channels=8", "batch_size=2", "iters=1",
        "warmup=1", "image_shape=[3,8,8]", "threads=1"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


@pytest.mark.slow
def test_one_row_writes_every_field(tmp_path):
    out = tmp_path / "row.json"
    proc = _run(*TINY, "model.memory=invertible", f"json={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    for field in ("memory", "levels", "steps", "hidden_channels", "batch_size", "precision", "compile", "device",
                  "images_per_s", "activation_mem_mb", "activation_mem_method", "sampling_images_per_s", "tflops"):
        assert field in row, field
    assert (row["memory"], row["steps"], row["levels"], row["batch_size"]) == ("invertible", 1, 2, 2)
    # derived figures restate the script's own arithmetic, in another order of float operations: compare with a tolerance
    assert row["images_per_s"] > 0 and math.isclose(row["images_per_s"], row["batch_size"] / row["step_s"], rel_tol=1e-6)
    assert row["activation_mem_mb"] > 0 and row["sampling_images_per_s"] > 0
    # a step is at least three times the coupling networks' forward convolutions (each has an input-
    # and a weight-gradient convolution in backward), which alone are, per image,
    # 4x4 px x (6*8*9 + 8*8 + 8*12*9) + 2x2 px x (12*8*9 + 8*8 + 8*24*9) multiply-adds
    conv_forward_flops = 2 * 2 * (16 * (432 + 64 + 864) + 4 * (864 + 64 + 1728))
    assert row["step_gflop"] * 1e9 > 3 * conv_forward_flops
    assert math.isclose(row["tflops"], row["step_gflop"] / 1e3 / row["step_s"], rel_tol=1e-6)
    assert row["gemm_tflops"] > 0 and math.isclose(row["of_gemm"], row["tflops"] / row["gemm_tflops"], rel_tol=1e-6)
    assert "| invertible | 1 | 8 | 2 |" in proc.stdout  # the printed table


@pytest.mark.slow
def test_unknown_suite_is_one_line_naming_the_key():
    proc = _run("suite=bogus")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "suite='bogus'" in lines[0] and "memory" in lines[0], proc.stderr


@pytest.mark.slow
def test_interleaved_precision_gives_an_fp32_and_a_bf16_row(tmp_path):
    """precision=interleaved (suite=precision's rows): one process, two rows with the same weights; the
    bf16 row carries the speed ratio, and both the round trip's error."""
    out = tmp_path / "rows.json"
    proc = _run(*[a for a in TINY if a != "suite=one"], "suite=one", "precision=interleaved", f"json={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    fp32, bf16 = json.loads(out.read_text())["rows"]
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert math.isclose(bf16["bf16_over_fp32"], bf16["images_per_s"] / fp32["images_per_s"], rel_tol=1e-9)
    assert 0 <= fp32["reconstruction_error"] < 1e-5 and 0 <= bf16["reconstruction_error"] < 1e-2
    assert fp32["sampling_images_per_s"] > 0 and bf16["sampling_images_per_s"] > 0
