"""Rebuild the sample images of the README (docs/*.png) with the project's own commands.

    python scripts/make_readme_images.py                        # train experiment=mnist_class (~5 min), then sample
    python scripts/make_readme_images.py --ckpt outputs/mnist_class/<run>/checkpoints/last.ckpt   # sample only

It runs, as subprocesses, exactly the commands the README's sampling section shows:

    python train.py experiment=mnist_class
    python sample.py ckpt_path=<ckpt> task=sample n=50 nrow=10
    python sample.py ckpt_path=<ckpt> task=temperature n=10
    python sample.py ckpt_path=<ckpt> task=class n=10 temperature=0.5
    python sample.py ckpt_path=<ckpt> task=interpolate n=4 points=10 mode=slerp
    python sample.py ckpt_path=<ckpt> task=reconstruct n=16
    python sample.py ckpt_path=<ckpt> task=manipulate attribute=8 baseline=3 n=4 scales=[-1,-0.5,0,0.5,1]

and copies each grid to docs/mnist_class_<task>.png. MNIST is read from GLOW_DATA_DIR (default data/);
the whole run takes under 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SAMPLE_TASKS = {  # docs/ name -> sample.py options
    "sample": ["task=sample", "n=50", "nrow=10"],
    "temperature": ["task=temperature", "n=10"],
    "class": ["task=class", "n=10", "temperature=0.5"],
    "interpolate": ["task=interpolate", "n=4", "points=10", "mode=slerp"],
    "reconstruct": ["task=reconstruct", "n=16"],
    "manipulate": ["task=manipulate", "attribute=8", "baseline=3", "n=4", "scales=[-1,-0.5,0,0.5,1]"],
}


def run(command: list[str], env: dict) -> str:
    print("$ " + " ".join(command), flush=True)
    start = time.time()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}")
    for line in done.stdout.splitlines() + done.stderr.splitlines():
        if line.startswith(("warning:", "test bits/dim")) or ".png" in line:
            print("  " + line)
    print(f"  ({time.time() - start:.0f} s)", flush=True)
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="reuse this train.py checkpoint instead of training one")
    parser.add_argument("--work", default="outputs/readme", help="run directories (default: outputs/readme)")
    parser.add_argument("--out", default="docs", help="where the PNGs go (default: docs)")
    parser.add_argument("--train-args", nargs="*", default=[], help="extra train.py overrides")
    args = parser.parse_args()

    env = dict(os.environ)
    work, out = (REPO / args.work).resolve(), (REPO / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    if args.ckpt:
        ckpt = Path(args.ckpt).resolve()
    else:
        train_dir = work / "train"
        if train_dir.exists():
            shutil.rmtree(train_dir)  # a fresh run, never a silent resume
        run([python, "train.py", "experiment=mnist_class", "logger=csv", f"hydra.run.dir={train_dir}",
             *args.train_args], env)
        results = json.loads((train_dir / "results.json").read_text())
        ckpt = Path(results["last_checkpoint"])
    for name, options in SAMPLE_TASKS.items():
        run_dir = work / f"sample_{name}"
        stdout = run([python, "sample.py", f"ckpt_path={ckpt}", *options, f"hydra.run.dir={run_dir}"], env)
        written = [line.split()[0] for line in stdout.splitlines() if line.split() and line.split()[0].endswith(".png")]
        target = out / f"mnist_class_{name}.png"
        shutil.copyfile(written[-1], target)
        print(f"  -> {target.relative_to(REPO) if target.is_relative_to(REPO) else target}")


if __name__ == "__main__":
    main()
