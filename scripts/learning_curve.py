"""Learning curves: test bits/dim at fixed steps for named variants over several seeds.

    python scripts/learning_curve.py                  # the default, plain Glow and its 3 ablations, 3 seeds
    python scripts/learning_curve.py variants=[default,peer_budget] seeds=[0] max_steps=400 eval_steps=[200,400]
    python scripts/learning_curve.py output=docs/learning_curve 'overrides=["module.lr=2e-3"]'

Each (variant, seed) is one `train.py` run in a subprocess (the same code path as `make train`), with
the glow.curve.TestCurve callback evaluating the WHOLE test split at ``eval_steps``. Writes
<output>.json and <output>.csv with rows (variant, seed, step, test_bpd, seconds) and <output>.png
(mean over seeds, min-max band). A finished run is reused only when its saved config matches the
command (variant, overrides, seed, max_steps, eval_steps), so an interrupted sweep resumes where it
stopped; a finished run with other settings is refused in one line (exit 2): use another output=.
Set GLOW_DATA_DIR to a local MNIST copy.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hydra
from omegaconf import DictConfig

from glow.cli import hydra_entry
from glow.errors import exit_with_config_error
from glow.run_config import settings_differ

REPO = Path(__file__).resolve().parents[1]


def settings(cfg: DictConfig, variant: str, seed: int, curve: Path) -> list[str]:
    """The train.py overrides that define one run of the sweep."""
    steps = "[" + ",".join(str(s) for s in cfg.eval_steps) + "]"
    return [*cfg.catalogue[variant], *cfg.overrides, f"seed={seed}", f"trainer.max_steps={cfg.max_steps}",
            "test_after_fit=false", "+callbacks.curve._target_=glow.curve.TestCurve",
            f"+callbacks.curve.eval_steps={steps}", f"+callbacks.curve.output={curve}"]


def check_finished(cfg: DictConfig, variant: str, seed: int, runs: Path) -> None:
    """A finished run is reused only when it was trained with this command's settings."""
    run_dir = runs / f"{variant}_seed{seed}"
    if not (run_dir / "done").exists():
        return
    differ = settings_differ(run_dir, settings(cfg, variant, seed, run_dir / "curve.jsonl"))
    if differ:
        key, have, wanted = differ[0]
        exit_with_config_error(f"output={cfg.output!r} is not allowed: its finished run {run_dir.name} was trained with "
                               f"{key}={have}, and this command asks {key}={wanted}; use another output= (or remove "
                               f"{run_dir.name})")


def run_one(cfg: DictConfig, variant: str, seed: int, runs: Path) -> list[dict]:
    run_dir = runs / f"{variant}_seed{seed}"
    curve = run_dir / "curve.jsonl"
    if (run_dir / "done").exists():  # checked against this command by check_finished
        return [json.loads(line) for line in curve.read_text().splitlines()]
    shutil.rmtree(run_dir, ignore_errors=True)  # a half-finished run of ours: start it again
    command = [sys.executable, str(REPO / "train.py"), *settings(cfg, variant, seed, curve), "logger=none",
               f"hydra.run.dir={run_dir}"]
    print(f"== {variant} seed {seed}: {' '.join(command[2:])}", flush=True)
    env = dict(os.environ)
    if cfg.jobs > 1:  # parallel runs: one thread each, so they do not fight over the cores
        env["OMP_NUM_THREADS"] = "1"
    with (run_dir.parent / f"{variant}_seed{seed}.log").open("w") as log:
        subprocess.run(command, cwd=REPO, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    (run_dir / "done").touch()
    return [json.loads(line) for line in curve.read_text().splitlines()]


def summarise(rows: list[dict]) -> dict:
    """{variant: {step: (mean, min, max, n)}} over seeds, finite figures only."""
    table: dict = {}
    for row in rows:
        if row["test_bpd"] is not None:
            table.setdefault(row["variant"], {}).setdefault(row["step"], []).append(row["test_bpd"])
    return {v: {s: (statistics.mean(b), min(b), max(b), len(b)) for s, b in sorted(steps.items())}
            for v, steps in table.items()}


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for variant, steps in summary.items():
        xs = list(steps)
        means, lows, highs = ([steps[s][i] for s in xs] for i in range(3))
        n = max(steps[s][3] for s in xs)
        ax.plot(xs, means, marker="o", label=f"{variant} (n={n})")
        ax.fill_between(xs, lows, highs, alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("test bits/dim (whole test split)")
    ax.set_title(title + "\nmean over seeds, band = min..max", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@hydra.main(version_base="1.3", config_path="../conf", config_name="learning_curve")
def main(cfg: DictConfig) -> None:
    unknown = [v for v in cfg.variants if v not in cfg.catalogue]
    if unknown:
        exit_with_config_error(f"variants={list(cfg.variants)!r} is not allowed: {unknown[0]!r} is not one of "
                               f"{', '.join(cfg.catalogue)}")
    output = Path(cfg.output)
    if not output.is_absolute():
        output = Path(hydra.utils.get_original_cwd()) / output
    runs = output.parent / f"{output.name}_runs"
    runs.mkdir(parents=True, exist_ok=True)
    # seed-major: an interrupted sweep still has every variant at the first seeds
    jobs = [(variant, int(seed)) for seed in cfg.seeds for variant in cfg.variants]
    for job in jobs:  # before any training: a finished run with other settings stops the sweep
        check_finished(cfg, *job, runs)
    with ThreadPoolExecutor(max_workers=max(1, int(cfg.jobs))) as pool:
        curves = list(pool.map(lambda job: run_one(cfg, *job, runs), jobs))
    rows = [dict(variant=v, seed=s, **r) for (v, s), curve in zip(jobs, curves) for r in curve]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    with output.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["variant", "seed", "step", "test_bpd", "test_nonfinite", "seconds"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows)
    plot(summary, output.with_suffix(".png"), cfg.title)
    print(f"{'variant':<24}{'step':>6}{'mean bpd':>10}{'min':>8}{'max':>8}{'seeds':>7}")
    for variant, steps in summary.items():
        for step, (mean, low, high, n) in steps.items():
            print(f"{variant:<24}{step:>6}{mean:>10.3f}{low:>8.3f}{high:>8.3f}{n:>7}")
    print(f"written: {output.with_suffix('.json')}, .csv, .png")


if __name__ == "__main__":
    hydra_entry(main, "learning_curve", Path(__file__).resolve().parents[1] / "conf")  # --help; composition errors: one line
