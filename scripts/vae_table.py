"""Every VAE posterior at the same budget, and the README table: test -ELBO and importance-weighted NLL.

    python scripts/vae_table.py                                   # all posteriors, 2000 steps each, K=4
    python scripts/vae_table.py --steps 5000 --seeds 0 1 2 --out runs/vae_table
    python scripts/vae_table.py --posteriors none planar --steps 200      # a quick look
    python scripts/vae_table.py --steps 5000 --seeds 0 1 2 --out runs/vae_table --table-only   # finished runs only

Each run is ``python train.py experiment=vae_mnist model.posterior=P model.flow_length=K
trainer.max_steps=S seed=s`` in <out>/<P>_seed<s>/. Resumable: a finished run is reused only when its
saved config (.hydra/config.yaml) matches the command; one with a checkpoint but no results, or one
trained with fewer steps and otherwise the same settings, resumes (ckpt_path=auto) to S steps. A run
with other settings is refused in one line (exit 2): use another --out. Writes <out>/vae_table.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from glow.errors import exit_with_config_error
from glow.run_config import settings_differ
from glow.vae import POSTERIORS

REPO = Path(__file__).resolve().parents[1]


def run_one(out: Path, posterior: str, seed: int, args) -> dict | None:
    run_dir = out / f"{posterior}_seed{seed}"
    results = run_dir / "results.json"
    settings = ["experiment=vae_mnist", f"model.posterior={posterior}", f"model.flow_length={args.flow_length}",
                f"trainer.max_steps={args.steps}", f"seed={seed}", f"eval.iw_samples={args.iw_samples}", *args.overrides]
    command = [sys.executable, str(REPO / "train.py"), *settings, f"logger={args.logger}", f"hydra.run.dir={run_dir}",
               "callbacks.progress.refresh_rate=100"]
    if results.is_file() or (run_dir / "checkpoints" / "last.ckpt").is_file():
        differ = settings_differ(run_dir, settings)
        fewer_steps = [d for d in differ if d[0] == "trainer.max_steps" and isinstance(d[1], int) and d[1] < args.steps]
        if differ and differ != fewer_steps:
            key, have, wanted = next(d for d in differ if d not in fewer_steps)
            exit_with_config_error(f"--out={str(out)!r} is not allowed: {run_dir.name} was trained with {key}={have}, "
                                   f"and this table asks {key}={wanted}; use another --out (or remove that run)")
        if results.is_file() and not differ:
            return json.loads(results.read_text())
        command.append("ckpt_path=auto")  # unfinished, or finished at fewer steps: resume it to args.steps
    if args.table_only:
        return None
    print("+", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=REPO)  # train.py imports the glow beside it
    return json.loads(results.read_text())


def table(rows: dict[str, list[dict]], args) -> str:
    def cell(values: list[float], digits: int = 2) -> str:
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    seeds = " ".join(str(s) for s in args.seeds)
    lines = [f"| posterior | seeds | test -ELBO (nats) | test NLL, IW k={args.iw_samples} (nats) | IW NLL (bits/pixel) | "
             f"train minutes | command |", "|---|---|---|---|---|---|---|"]
    for posterior, runs in rows.items():
        command = (f"`python train.py experiment=vae_mnist model.posterior={posterior} model.flow_length="
                   f"{args.flow_length} trainer.max_steps={args.steps}`")
        if not runs:
            continue
        lines.append(f"| {posterior} | {len(runs)} | {cell([r['test_neg_elbo'] for r in runs])} | "
                     f"{cell([r['test_nll_iw'] for r in runs])} | {cell([r['test_nll_iw_bpd'] for r in runs], 4)} | "
                     f"{statistics.mean(r['wall_time_s'] for r in runs) / 60:.1f} | {command} |")
    per_seed = "; ".join(f"{p}: " + ", ".join(f"{r['test_neg_elbo']:.2f}" for r in runs) for p, runs in rows.items() if runs)
    lines.append(f"\nseeds: {seeds}; mean ± std over seeds where more than one. Per-seed test -ELBO in seed order: "
                 f"{per_seed}. Written by scripts/vae_table.py.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posteriors", nargs="+", default=list(POSTERIORS), choices=POSTERIORS)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--flow-length", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--iw-samples", type=int, default=100)
    parser.add_argument("--logger", default="csv")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "vae_table")
    parser.add_argument("--table-only", action="store_true", help="write the table from finished runs; train nothing")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides, e.g. data.batch_size=128")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for seed in args.seeds:  # seed-major: a first complete table comes before the repeats
        for posterior in args.posteriors:
            result = run_one(args.out, posterior, seed, args)
            rows.setdefault(posterior, []).extend([result] if result is not None else [])
            text = table(rows, args)
            (args.out / "vae_table.md").write_text(text + "\n")
    (args.out / "vae_table.json").write_text(json.dumps(
        {p: [{k: r.get(k) for k in ("test_neg_elbo", "test_nll_iw", "test_nll_iw_bpd", "wall_time_s", "steps")}
             for r in runs] for p, runs in rows.items()}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
