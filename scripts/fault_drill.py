"""Fault drill: attack train.py as an attacker or an unlucky user would, with tiny models, and
print a Markdown table of attack / outcome / passed (10-20 minutes on 2 CPU cores).

    python scripts/fault_drill.py                       # table on stdout
    python scripts/fault_drill.py json=drill.json       # also a JSON list of {"attack", "outcome", "passed"}

Everything happens in a temporary folder (removed afterwards); nothing outside it is touched.
Exit code 0 when every attack passed, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

try:  # imported as scripts.fault_drill (the tests), or run as a script (its directory is then on the path)
    from scripts import fault_drill_runs
except ImportError:
    import fault_drill_runs

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.levels=2", "model.steps=2", "model.hidden_channels=8", "data.image_size=8", "data.batch_size=8",
        "data.eval_batch_size=16", "module.warmup_steps=2", "module.init_batch_size=16", "logger=none",
        "trainer.val_check_interval=4", "callbacks.samples.every_n_steps=1000", "data.num_workers=0",
        "data.val_fraction=0.2", "callbacks.periodic_checkpoint.every_n_train_steps=1",
        "~callbacks.progress", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]
ROWS: list[dict] = []


def folder(root: Path, modes=("RGB",), per_class=12, test_per_class=4) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                im = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert(modes[i % len(modes)])
                im.save(root / split / label / f"{i:02d}.png")
    return root


def train(run_dir: Path, data: Path, *extra: str, env: dict | None = None, wait: bool = True):
    cmd = [sys.executable, str(REPO / "train.py"), "data=imagefolder", f"data.path={data}",
           f"hydra.run.dir={run_dir}", *TINY, *extra]
    full_env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def last_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def record(attack: str, outcome: str, passed: bool) -> None:
    ROWS.append({"attack": attack, "outcome": outcome, "passed": bool(passed)})
    print(f"[{'pass' if passed else 'FAIL'}] {attack}: {outcome}", file=sys.stderr, flush=True)


def loadable(path: Path) -> int | None:
    try:
        return int(torch.load(path, weights_only=True)["global_step"])
    except Exception:
        return None


def kill_and_resume(tmp: Path, data: Path, sig: int, tmpdir: str, name: str) -> None:
    run = tmp / name
    proc = train(run, data, "trainer.max_steps=400", env={"TMPDIR": tmpdir}, wait=False)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(random.uniform(0.2, 1.5))  # a random moment, often mid-save (a save every step)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    step = loadable(last)
    temps = [p.name for p in last.parent.glob(".*.tmp")]
    code = proc.returncode
    rc, _, err = train(run, data, f"trainer.max_steps={(step or 0) + 3}", "ckpt_path=last")
    resumed = loadable(last)
    # a kill mid-save may leave the writer's temp file; the resumed run must remove it
    temps_after = [p.name for p in last.parent.glob(".*.tmp")]
    expected = -9 if sig == signal.SIGKILL else 143
    ok = code == expected and step is not None and rc == 0 and resumed == step + 3 and not temps_after
    record(f"{signal.Signals(sig).name} at a random moment, TMPDIR={tmpdir}, resume with ckpt_path=last",
           f"exit {code}, last.ckpt loadable at step {step}, {len(temps)} temp file(s) left by it; resume exit {rc} "
           f"-> step {resumed}, {len(temps_after)} temp file(s) after", ok)


def bad_checkpoints(tmp: Path, data: Path, good: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'pwned'}",))

    cases = {"empty": lambda p: p.write_bytes(b""),
             "truncated": lambda p: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
             "poisoned (pickle payload)": lambda p: torch.save({"x": Payload()}, p)}
    for kind, make in cases.items():
        path = tmp / f"{kind.split()[0]}.ckpt"
        make(path)
        rc, _, err = train(tmp / f"run_{kind.split()[0]}", data, f"ckpt_path={path}")
        ok = rc == 2 and str(path) in err and not (tmp / f"run_{kind.split()[0]}" / "checkpoints").exists() \
            and not (tmp / "pwned").exists()
        record(f"{kind} checkpoint as ckpt_path", f"exit {rc}: {last_line(err)}", ok)
    rc, _, err = train(tmp / "run_mismatch", data, f"ckpt_path={good}", "model.hidden_channels=16")
    record("checkpoint of another model config", f"exit {rc}: {last_line(err)}",
           rc == 2 and "hidden_channels 8 != 16" in err and not (tmp / "run_mismatch" / "checkpoints").exists())


def craft_path_deleting_checkpoint(good: Path, victim: Path, victim_dir: Path, out: Path) -> Path:
    """The crafted-checkpoint attack: a weights_only-loadable checkpoint whose ModelCheckpoint state names
    paths outside its run (a local:// URL and absolute paths) for Lightning to delete at the next save."""
    ckpt = torch.load(good, weights_only=True)
    for key, state in ckpt["callbacks"].items():
        if "ModelCheckpoint" in key:
            state.pop("dirpath", None)
            state.update(best_model_path=f"local://{victim}", last_model_path=str(victim_dir),
                         kth_best_model_path=str(victim), best_model_score=torch.tensor(-1e9),
                         best_k_models={str(victim_dir): torch.tensor(0.0), f"local://{victim}": torch.tensor(1.0)})
    torch.save(ckpt, out)
    return out


def path_deleting_checkpoint(tmp: Path, data: Path, good: Path) -> None:
    victim, victim_dir = tmp / "victim.txt", tmp / "victim_dir"
    victim.write_text("precious")
    victim_dir.mkdir()
    (victim_dir / "inner").write_text("precious")
    crafted = craft_path_deleting_checkpoint(good, victim, victim_dir, tmp / "crafted.ckpt")
    rc, _, err = train(tmp / "run_crafted", data, f"ckpt_path={crafted}", "trainer.max_steps=8")
    intact = victim.exists() and (victim_dir / "inner").exists()
    record("checkpoint whose callback state names local:// and absolute paths",
           f"exit {rc}; victim file and directory {'intact' if intact else 'DELETED'}", rc == 0 and intact)


def data_attacks(tmp: Path) -> None:
    grey = folder(tmp / "grey_first", modes=("L", "RGB"))
    rc, _, err = train(tmp / "run_grey", grey, "trainer.max_steps=2")
    shape = torch.load(tmp / "run_grey" / "checkpoints" / "last.ckpt", weights_only=True)[
        "hyper_parameters"]["model_config"]["image_shape"] if rc == 0 else None
    record("greyscale-first RGB folder", f"exit {rc}; model image_shape {shape}", rc == 0 and shape[0] == 3)
    mixed = folder(tmp / "mixed", modes=("RGBA", "P", "LA", "RGB", "L"))
    rc, _, err = train(tmp / "run_mixed", mixed, "trainer.max_steps=2")
    record("mixed-mode folder (RGBA, palette, LA, RGB, L)", f"exit {rc}", rc == 0)
    corrupt = folder(tmp / "corrupt")
    (corrupt / "test" / "a" / "00.png").write_bytes(b"garbage")
    rc, _, err = train(tmp / "run_corrupt", corrupt, "trainer.max_steps=2", "data.max_bad_fraction=0.05")
    results = tmp / "run_corrupt" / "results.json"
    record("corrupt image in test/ (within max_bad_fraction)",
           f"exit {rc}; named in a warning: {'00.png' in err}; results.json written: {results.exists()}",
           rc == 0 and "00.png" in err and results.exists())
    rc, _, err = train(tmp / "run_corrupt_strict", corrupt, "trainer.max_steps=2")
    record("corrupt image beyond data.max_bad_fraction=0.01", f"exit {rc}: {last_line(err)}",
           rc == 2 and "00.png" in err and not (tmp / "run_corrupt_strict" / "checkpoints").exists())
    empty = folder(tmp / "empty_test", test_per_class=0)
    rc, _, err = train(tmp / "run_empty", empty, "trainer.max_steps=2")
    record("empty test/ class folders", f"exit {rc}: {last_line(err)}",
           rc == 2 and not (tmp / "run_empty" / "checkpoints").exists())


def concurrent_and_reuse(tmp: Path, data: Path) -> None:
    log_dir = tmp / "outputs"
    cmd = [sys.executable, str(REPO / "train.py"), "data=imagefolder", f"data.path={data}", f"paths.log_dir={log_dir}",
           *TINY, "trainer.max_steps=2"]
    procs = [subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    dirs = sorted(p.parent.name for p in log_dir.glob("*/*/results.json"))
    record("two runs started in the same second", f"exits {codes}; {len(set(dirs))} separate run directories",
           codes == [0, 0] and len(set(dirs)) == 2)
    run = next(log_dir.glob("*/*/results.json")).parent
    rc, _, err = train(run, data, "trainer.max_steps=2")
    record("rerun in a used run directory without ckpt_path", f"exit {rc}: {last_line(err)}", rc == 2)


def divergence(tmp: Path, data: Path) -> None:
    rc, _, err = train(tmp / "run_div", data, "module.lr=1e6", "module.warmup_steps=1", "module.grad_clip_norm=null",
                       "module.max_nonfinite_steps=3", "trainer.max_steps=200")
    results = tmp / "run_div" / "results.json"
    try:
        figures = json.loads(results.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (OSError, ValueError):
        figures = None
    ok = rc == 3 and figures is not None and figures.get("best_checkpoint") is None
    record("divergence (lr=1e6, 3 non-finite steps per rollback)",
           f"exit {rc}: {last_line(err)[:100]}; results.json valid JSON: {figures is not None}", ok)


def main(argv: list[str]) -> int:
    out_json = next((a.split("=", 1)[1] for a in argv if a.startswith("json=")), None)
    random.seed(0)
    start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="glow_drill_"))
    try:
        data = folder(tmp / "data")
        rc, _, err = train(tmp / "good", data, "trainer.max_steps=4")
        good = tmp / "good" / "checkpoints" / "last.ckpt"
        if rc != 0:
            print(f"the baseline run failed: {last_line(err)}", file=sys.stderr)
            return 1
        kill_and_resume(tmp, data, signal.SIGKILL, str(tmp), "kill_same_fs")
        if os.path.isdir("/dev/shm"):
            kill_and_resume(tmp, data, signal.SIGKILL, "/dev/shm", "kill_shm")
        kill_and_resume(tmp, data, signal.SIGTERM, "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp), "term")
        path_deleting_checkpoint(tmp, data, good)
        bad_checkpoints(tmp, data, good)
        data_attacks(tmp)
        from fault_drill_inputs import input_attacks  # here: tests import this file as scripts.fault_drill

        input_attacks(tmp, data, good, train, record)  # bad inputs: sizes, bit depths, keys, counts, checkpoints
        concurrent_and_reuse(tmp, data)
        divergence(tmp, data)
        fault_drill_runs.run_rows(sys.modules[__name__], tmp, data, good)  # run directories, resume, scripts
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = ["| attack | outcome | passed |", "|---|---|---|"]
    lines += [f"| {r['attack']} | {r['outcome'].replace('|', '/')} | {'yes' if r['passed'] else 'NO'} |" for r in ROWS]
    print("\n".join(lines))
    print(f"\n{sum(r['passed'] for r in ROWS)} of {len(ROWS)} passed in {time.time() - start:.0f} s")
    if out_json:
        Path(out_json).write_text(json.dumps(ROWS, indent=2) + "\n")
    return 0 if all(r["passed"] for r in ROWS) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
