"""Checkpoint path safety and atomic writes, on .ckpt victims outside the run (the only files a removal
would ever be asked to touch): glow.checkpoints.inside, SafeCheckpointIO.remove_checkpoint, the
restored paths and removals of SafeModelCheckpoint, the on-exception checkpoint in a real Trainer (it
saves when the run made progress, and only then), a write that fails half way, stale temp files, and
weights-only reads."""

from __future__ import annotations

import os
import shlex
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from glow import checkpoints
from glow.checkpoint_callbacks import SafeModelCheckpoint, SafeOnExceptionCheckpoint
from glow.checkpoints import (CheckpointError, SafeCheckpointIO, atomic_save, inside, read_checkpoint,
                              remove_stale_temp_files)


@pytest.fixture
def layout(tmp_path):
    """<tmp>/run/checkpoints (the root), .ckpt victims outside it, and symlinks from inside to them."""
    root = tmp_path / "run" / "checkpoints"
    root.mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    victims = {"beside": tmp_path / "run" / "victim.ckpt", "above": tmp_path / "victim.ckpt",
               "sibling": tmp_path / "run" / "checkpoints-old" / "victim.ckpt", "far": outside / "victim.ckpt"}
    for victim in victims.values():
        victim.parent.mkdir(parents=True, exist_ok=True)
        victim.write_bytes(b"precious")
    (root / "link.ckpt").symlink_to(victims["far"])
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    return SimpleNamespace(root=root, tmp=tmp_path, victims=victims, outside=outside)


def attacks(layout) -> list[str]:
    """Paths that name a .ckpt outside the root while looking as if they were inside it."""
    root = layout.root
    return [f"{root}/../victim.ckpt", f"{root}/../../victim.ckpt", f"{root}/sub/../../victim.ckpt",
            str(layout.victims["sibling"]), str(layout.victims["above"]), f"{root}/link.ckpt",
            f"{root}/linked_dir/victim.ckpt", f"file://{layout.victims['above']}", f"{root}"]


def test_inside_refuses_dots_symlinks_prefixes_urls_and_the_root_itself(layout, monkeypatch):
    root = layout.root
    for path in attacks(layout):
        assert not inside(path, root), path
    for path in (root / "last.ckpt", root / "sub" / "epoch=1.ckpt", f"{root}/sub/../last.ckpt"):
        assert inside(path, root), path
    alias = layout.tmp / "alias"  # the root reached through a symlink is still the root
    alias.symlink_to(root, target_is_directory=True)
    assert inside(alias / "last.ckpt", root) and inside(root / "last.ckpt", alias)
    monkeypatch.chdir(root)  # relative paths are relative to where the process runs
    assert inside("last.ckpt", root) and not inside("../victim.ckpt", root) and not inside("linked_dir/victim.ckpt", root)


def test_remove_checkpoint_deletes_only_checkpoint_files_inside_the_root(layout):
    root = layout.root
    io = SafeCheckpointIO(root)
    own = [root / "epoch=3.ckpt", root / "sub" / "kth.ckpt"]
    keep = [root / "results.json", root / "notes.txt", root / "last.ckpt.bak"]
    for f in own + keep:
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"x")
    (root / "dir.ckpt").mkdir()
    (root / "dir.ckpt" / "inner.ckpt").write_bytes(b"x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in attacks(layout) + [str(f) for f in keep] + [str(root / "dir.ckpt")]:
            io.remove_checkpoint(path)
    assert len(caught) == len(attacks(layout)) + len(keep) + 1 and all("not removing" in str(w.message) for w in caught)
    for victim in layout.victims.values():
        assert victim.read_bytes() == b"precious", victim
    assert (root / "link.ckpt").is_symlink() and (root / "linked_dir").is_symlink()  # not even the links
    assert all(f.exists() for f in keep) and (root / "dir.ckpt" / "inner.ckpt").exists()
    for f in own:  # and what is ours does go
        io.remove_checkpoint(str(f))
        assert not f.exists()
    io.remove_checkpoint(str(root / "never-written.ckpt"))  # already gone: no error
    rootless = SafeCheckpointIO(None)
    (root / "epoch=4.ckpt").write_bytes(b"x")
    with pytest.warns(UserWarning, match="not removing"):
        rootless.remove_checkpoint(str(root / "epoch=4.ckpt"))
    assert (root / "epoch=4.ckpt").exists()


def test_model_checkpoint_restores_and_removes_only_its_own_paths(layout):
    root = layout.root
    ours = [str(root / f"epoch={i}.ckpt") for i in range(3)]
    outside = attacks(layout)
    callback = SafeModelCheckpoint(dirpath=str(root), monitor="val/bpd", save_top_k=2)
    with pytest.warns(UserWarning, match="not restoring"):
        callback.load_state_dict({"best_model_path": outside[0], "best_model_score": torch.tensor(1.0),
                                  "kth_best_model_path": outside[5], "kth_value": torch.tensor(2.0),
                                  "last_model_path": outside[6], "dirpath": str(root),
                                  "best_k_models": {ours[0]: torch.tensor(1.5), outside[1]: torch.tensor(0.5),
                                                    outside[6]: torch.tensor(0.1), str(root / "r.json"): 0.2}})
    assert callback.best_k_models == {ours[0]: torch.tensor(1.5)}
    assert callback.best_model_path == "" and callback.kth_best_model_path == "" and callback.last_model_path == ""
    callback.load_state_dict({"best_model_path": ours[1], "best_model_score": torch.tensor(1.0),
                              "kth_best_model_path": ours[2], "kth_value": torch.tensor(2.0),
                              "last_model_path": ours[0], "best_k_models": {ours[1]: torch.tensor(1.0)}})
    assert (callback.best_model_path, callback.kth_best_model_path, callback.last_model_path) == (ours[1], ours[2], ours[0])
    removed = []
    trainer = SimpleNamespace(strategy=SimpleNamespace(remove_checkpoint=removed.append))
    for path in outside + ours + [str(root / "results.json")]:
        callback._remove_checkpoint(trainer, path)
    assert removed == ours


class _Crash(L.LightningModule):
    def __init__(self, at_step: int):
        super().__init__()
        self.at_step, self.layer = at_step, torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        if self.global_step == self.at_step:
            raise RuntimeError("crash")
        return self.layer(batch[0]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 2)), batch_size=4)


@pytest.mark.parametrize("crash_at", [0, 3])
def test_on_exception_checkpoint_in_a_real_trainer(tmp_path, crash_at):
    """A crash after 3 steps leaves on_exception.ckpt at step 3 (through the safe CheckpointIO); a crash
    before the first step writes nothing."""
    trainer = L.Trainer(max_steps=10, callbacks=[SafeOnExceptionCheckpoint(tmp_path)], plugins=[SafeCheckpointIO(tmp_path)],
                        logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with pytest.raises(RuntimeError, match="crash"):
        trainer.fit(_Crash(crash_at))
    path = tmp_path / "on_exception.ckpt"
    if crash_at == 0:
        assert not path.exists()
    else:
        assert torch.load(path, weights_only=True)["global_step"] == crash_at


# -- atomic writes and what they leave ------------------------------------------------------------------
class _FailingHalfWay:
    """A file whose write() puts half the bytes on disk and then fails (a full disk, a kill)."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_a_save_that_fails_half_way_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_save({"version": torch.tensor(1), "w": torch.zeros(1000)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(checkpoints, "open", lambda *a, **k: _FailingHalfWay(open(*a, **k)), raising=False)
    with pytest.raises(OSError, match="No space left"):
        atomic_save({"version": torch.tensor(2), "w": torch.ones(100_000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and torch.load(path, weights_only=True)["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind
    atomic_save({"version": torch.tensor(3)}, path)
    assert torch.load(path, weights_only=True)["version"] == 3 and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def _dead_pid() -> int:
    for pid in range(4_194_000, 4_194_304):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    pytest.skip("no free pid found")


def test_stale_temp_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    files = {name: tmp_path / name for name in (f".last.ckpt.{dead}.tmp", f".last.ckpt.{alive}.tmp",
                                                  f".last.ckpt.{os.getpid()}.tmp", "notes.tmp", "last.ckpt",
                                                  f"last.ckpt.{dead}.tmp")}
    for f in files.values():
        f.write_bytes(b"x")
    removed = remove_stale_temp_files(tmp_path)
    gone = {f".last.ckpt.{dead}.tmp", f".last.ckpt.{os.getpid()}.tmp"}  # a dead writer's, and our own earlier one
    assert {p.name for p in removed} == gone
    assert {p.name for p in tmp_path.iterdir()} == set(files) - gone


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_a_checkpoint_holding_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "poisoned.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model_config": {}}, "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="is not a checkpoint of ours"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="is not a checkpoint of ours"):
        SafeCheckpointIO(tmp_path).load_checkpoint(path)
    assert not marker.exists()
