"""A run writes only into its own directory: what a directory holds, the lock, ckpt_path=auto | last,
another run's checkpoint, and a second run on a locked directory. Fast: no training."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from glow import rundir, runlock
from glow.errors import ConfigError


def listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def used_run(root: Path, last: bool = True) -> Path:
    """A finished run as train.py leaves it."""
    (root / ".hydra").mkdir(parents=True)
    (root / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / ("last.ckpt" if last else "best-step4.ckpt")).write_bytes(b"weights")
    (root / "results.json").write_text("{}\n")
    return root


@pytest.fixture(autouse=True)
def released(tmp_path):
    yield
    for path in list(rundir._CLAIMED):
        rundir.release(path)


@pytest.mark.parametrize("files", [{"results.json": "mine"}, {"train.log": "my notes"},
                                   {"checkpoints/.x.ckpt.999999.tmp": "not a temp file of ours"},
                                   {"notes.txt": "x", "checkpoints/old.ckpt.bak": "y"}])
@pytest.mark.parametrize("ckpt_path", [None, "auto", "last"])
def test_a_folder_of_other_files_is_refused_and_left_untouched(tmp_path, files, ckpt_path):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    before = listing(tmp_path)
    with pytest.raises(ConfigError, match="is not allowed: it holds files that are not a train.py run's") as info:
        rundir.claim(tmp_path, ckpt_path)
    assert sorted(Path(n).parts[0] for n in files)[0] in str(info.value)  # names what it found
    assert listing(tmp_path) == before and not (tmp_path / runlock.LOCK_NAME).exists()


def test_a_used_run_is_only_resumed(tmp_path):
    run = used_run(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"already holds a run \(checkpoints/last.ckpt, results.json\); resume it "
                                          r"with ckpt_path=auto"):
        rundir.claim(run, None)
    assert rundir.claim(run, "auto") == str(run / "checkpoints" / "last.ckpt")
    rundir.release(run)
    assert rundir.claim(run, "last") == str(run / "checkpoints" / "last.ckpt")
    rundir.release(run)
    inside = str(run / "checkpoints" / "last.ckpt")
    assert rundir.claim(run, inside) == inside and rundir.resumes_own_run(run, inside)


def test_auto_starts_fresh_where_there_is_nothing_to_resume(tmp_path):
    assert rundir.claim(tmp_path / "new", "auto") is None  # no directory yet
    assert (tmp_path / "new" / runlock.LOCK_NAME).is_file()
    rundir.release(tmp_path / "new")
    assert rundir.state_of(tmp_path / "new")[0] == rundir.STARTED  # a run that wrote nothing to keep
    assert rundir.claim(tmp_path / "new", "auto") is None and rundir.claim(tmp_path / "new", None) is None
    rundir.release(tmp_path / "new")
    broken = used_run(tmp_path / "broken", last=False)  # results and a best checkpoint, no last.ckpt
    with pytest.raises(ConfigError, match="ckpt_path='auto' is not allowed .* no checkpoints/last.ckpt to resume"):
        rundir.claim(broken, "auto")


def test_last_without_a_checkpoint_is_one_line_and_creates_nothing(tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path='last' is not allowed: .*last.ckpt does not exist"):
        rundir.claim(tmp_path / "none", "last")
    assert not (tmp_path / "none").exists()


def test_another_runs_checkpoint_cannot_overwrite_a_used_run(tmp_path):
    victim = used_run(tmp_path / "victim")
    other = used_run(tmp_path / "other") / "checkpoints" / "last.ckpt"
    before = listing(victim)
    with pytest.raises(ConfigError, match=f"ckpt_path='{other}' is not allowed with hydra.run.dir='{victim}': "
                                          "that directory holds another run"):
        rundir.claim(victim, str(other))
    assert listing(victim) == before
    assert rundir.claim(tmp_path / "fresh", str(other)) == str(other)  # a new directory may start from it


def _hold_in_child(directory: Path) -> int:
    """A forked process that takes the lock and waits; returns its pid once it holds the lock."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: hold the lock until killed
        try:
            os.close(read)
            runlock.acquire(directory)
            os.write(write, b"x")
            time.sleep(120)
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"x"
    os.close(read)
    return pid


def test_a_second_run_is_refused_while_the_first_holds_the_lock_and_a_dead_holder_frees_it(tmp_path):
    run = tmp_path / "run"
    pid = _hold_in_child(run)
    try:
        with pytest.raises(ConfigError, match=f"another run \\(pid {pid} on .*\\) is writing there now"):
            rundir.claim(run, None)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert rundir.claim(run, None) is None  # the kernel dropped the dead holder's lock
    assert (run / runlock.LOCK_NAME).read_text().split()[0] == str(os.getpid())


def test_a_run_at_work_is_named_even_once_it_has_written_checkpoints(tmp_path):
    run = used_run(tmp_path / "run")
    pid = _hold_in_child(run)
    try:
        for ckpt_path in (None, "auto"):
            with pytest.raises(ConfigError, match=f"another run \\(pid {pid} on .*\\) is writing there now"):
                rundir.claim(run, ckpt_path)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert runlock.holder(run) is None


def test_without_flock_the_pid_file_is_the_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "fcntl", None)
    run = tmp_path / "run"
    run.mkdir()
    (run / runlock.LOCK_NAME).write_text(f"{os.getppid()} {os.uname().nodename}\n")  # a live process
    with pytest.raises(runlock.LockHeld):
        runlock.acquire(run)
    (run / runlock.LOCK_NAME).write_text(f"{2 ** 22 + 12345} {os.uname().nodename}\n")  # no such process
    assert runlock.acquire(run).directory == run
    runlock.release(run)
    assert (run / runlock.LOCK_NAME).read_text() == ""  # released: free for the next run


def test_only_rank_zero_checks_and_locks(tmp_path, monkeypatch):
    run = used_run(tmp_path / "run")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not rundir.is_rank_zero()
    assert rundir.claim(run, "auto") == str(run / "checkpoints" / "last.ckpt")  # resolved alike, no lock taken
    assert runlock.held(run) is None
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert not rundir.is_rank_zero()
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert rundir.is_rank_zero()


def test_the_scripts_run_directories_are_unique_per_process():
    from omegaconf import OmegaConf

    from tests.conftest import CONF
    def run_dir(name: str) -> str:
        return OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"), resolve=False)["hydra"]["run"]["dir"]

    for name in ("sample", "evaluate", "evaluate_inpainting"):
        assert "${unique_id:}" in run_dir(name)
    assert "${run_id:}" in run_dir("train")
    rundir.register_resolver()
    assert OmegaConf.create({"d": "${unique_id:}"}).d == rundir.unique_id() != ""
