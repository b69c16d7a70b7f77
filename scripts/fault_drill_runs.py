"""The fault drill's rows on run directories, resume and the scripts that read a run (see fault_drill.py,
which runs them: ``python scripts/fault_drill.py``). Each function takes the drill's own helpers as
``drill`` (train, record, last_line, loadable, REPO) so that the rows land in its one table."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def script(drill, cwd: Path, name: str, *args: str, wait: bool = True):
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(drill.REPO / name), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def one_line(rc: int, err: str, *words: str) -> bool:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return rc == 2 and len(lines) == 1 and "Traceback" not in err and all(w in lines[0] for w in words)


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def same_second_scripts(drill, tmp: Path, good: Path) -> None:
    for name, args in (("sample.py", ["task=reconstruct", "n=2"]), ("scripts/evaluate.py", [])):
        cwd = tmp / f"same_second_{Path(name).stem}"
        cwd.mkdir()
        procs = [script(drill, cwd, name, f"ckpt_path={good}", *args, wait=False) for _ in range(2)]
        codes = [p.wait(timeout=300) for p in procs]
        dirs = {p.parent for p in cwd.glob("outputs/*/*/*") if p.is_file()}
        drill.record(f"two {name} started in the same second", f"exits {codes}; {len(dirs)} separate run directories",
                     codes == [0, 0] and len(dirs) == 2)


def locked_directory(drill, tmp: Path, data: Path) -> None:
    run = tmp / "locked"
    first = drill.train(run, data, "trainer.max_steps=300", wait=False)
    lock = run / ".glow.lock"
    deadline = time.time() + 120
    while not (lock.is_file() and lock.read_text().strip()) and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    saved = len(list(run.glob("checkpoints/*.ckpt")))  # the lock, not a checkpoint, marks the run as in use
    rc, _, err = drill.train(run, data, "trainer.max_steps=2")
    first.terminate()  # its SIGTERM handler saves last.ckpt and exits 143
    first.communicate(timeout=120)
    stray = sorted(p.name for p in run.glob("checkpoints/last-v*.ckpt"))
    drill.record("a second train.py on the hydra.run.dir of a run in progress",
                 f"exit {rc} ({saved} checkpoints there yet): {drill.last_line(err)}; {len(stray)} stray last-v*.ckpt",
                 one_line(rc, err, "another run (pid", "is writing there now") and not stray)


def foreign_folders(drill, tmp: Path, data: Path) -> None:
    for name in ("results.json", "train.log", "checkpoints/.notes.ckpt.999999.tmp"):
        folder = tmp / f"foreign_{Path(name).name}"
        (folder / name).parent.mkdir(parents=True)
        (folder / name).write_text("the user's own file\n")
        before = snapshot(folder)
        rc, _, err = drill.train(folder, data, "trainer.max_steps=2")
        drill.record(f"hydra.run.dir holding a user's {name}", f"exit {rc}: {drill.last_line(err)}; untouched: "
                     f"{snapshot(folder) == before}", one_line(rc, err, "not a train.py run's") and
                     snapshot(folder) == before)


def resume_mismatches(drill, tmp: Path, data: Path, good: Path) -> None:
    victim = tmp / "victim"
    shutil.copytree(good.parents[1], victim)
    before = snapshot(victim)
    rc, _, err = drill.train(victim, data, f"ckpt_path={good}", "trainer.max_steps=8")
    drill.record("ckpt_path of another run into a used run's hydra.run.dir", f"exit {rc}: {drill.last_line(err)}",
                 one_line(rc, err, "holds another run") and snapshot(victim) == before)
    for override, words in (("module.n_bits=5", "module.n_bits=8 and this run has module.n_bits=5"),
                            ("module.optimizer=adam", "module.optimizer=adamax and this run has module.optimizer=adam")):
        rc, _, err = drill.train(victim, data, "ckpt_path=auto", "trainer.max_steps=8", override)
        drill.record(f"resume with {override} (the checkpoint's differs)", f"exit {rc}: {drill.last_line(err)}",
                     one_line(rc, err, words) and snapshot(victim) == before)


def auto_and_full_disk(drill, tmp: Path, data: Path) -> None:
    run = tmp / "auto"
    steps = []
    for max_steps in (4, 7):
        rc, _, err = drill.train(run, data, "ckpt_path=auto", f"trainer.max_steps={max_steps}")
        steps.append((rc, drill.loadable(run / "checkpoints" / "last.ckpt")))
    drill.record("ckpt_path=auto on a new directory, then again with more steps",
                 f"(exit, step) {steps}", steps == [(0, 4), (0, 7)])
    last = run / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    limit = last.stat().st_size // 2
    cmd = [sys.executable, str(drill.REPO / "train.py"), "data=imagefolder", f"data.path={data}",
           f"hydra.run.dir={run}", *drill.TINY, "ckpt_path=auto", "trainer.max_steps=12"]
    done = subprocess.run(cmd, cwd=drill.REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE,
                                                                                        (limit, limit)))
    intact = last.read_bytes() == before and not list(run.rglob(".*.tmp"))
    drill.record("disk full while resuming (ulimit -f below a checkpoint's size)",
                 f"exit {done.returncode}: {drill.last_line(done.stderr)}; last.ckpt intact: {intact}",
                 done.returncode == 2 and "Traceback" not in done.stderr and intact
                 and drill.last_line(done.stderr).startswith("error: cannot write"))


def scripts_read_the_run(drill, tmp: Path, good: Path) -> None:
    cwd = tmp / "evaluate_no_data_keys"
    cwd.mkdir()
    rc, _, err = script(drill, cwd, "scripts/evaluate.py", f"ckpt_path={good}", "data.eval_batch_size=5")
    found = next(cwd.glob("outputs/evaluate/*/results.json"), None)
    figure = json.loads(found.read_text())["test_bpd"] if found else None
    expected = json.loads((good.parents[1] / "results.json").read_text())["test_bpd"]
    drill.record("scripts/evaluate.py on an image-folder run, no data keys, another eval batch size",
                 f"exit {rc}; test bits/dim {figure} vs the run's {expected:.6f}",
                 rc == 0 and figure is not None and abs(figure - expected) < 0.02)
    for name in ("sample.py", "scripts/evaluate.py", "scripts/evaluate_inpainting.py"):
        rc, _, err = script(drill, cwd, name)
        drill.record(f"{name} without ckpt_path", f"exit {rc}: {drill.last_line(err)}",
                     one_line(rc, err, "ckpt_path=None is not allowed"))


def run_rows(drill, tmp: Path, data: Path, good: Path) -> None:
    same_second_scripts(drill, tmp, good)
    locked_directory(drill, tmp, data)
    foreign_folders(drill, tmp, data)
    resume_mismatches(drill, tmp, data, good)
    auto_and_full_disk(drill, tmp, data)
    scripts_read_the_run(drill, tmp, good)
