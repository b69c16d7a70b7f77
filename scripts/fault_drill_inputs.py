"""The fault drill's rows for bad INPUTS: images of another size, bit depth or kind, special files, missing and
damaged data sets, bad keys and counts, crafted checkpoints, --help. scripts/fault_drill.py calls
``input_attacks`` with its own ``train`` and ``record``; run it through that script:

    python scripts/fault_drill.py json=drill.json

Each row passes when the input is handled (read correctly) or refused with exit code 2 and ONE stderr line
naming the key or file, before any work (no checkpoints written).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
HELP = ("train.py", "sample.py", "scripts/evaluate.py", "scripts/evaluate_inpainting.py", "scripts/demo.py",
        "scripts/benchmark.py")


def run(script: str, *args: str, timeout: float = 300) -> tuple[int, str, str]:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def one_line(rc: int, err: str, *names: str) -> bool:
    lines = [line for line in err.splitlines() if line.strip()]
    return rc == 2 and len(lines) == 1 and lines[0].startswith("config error:") and all(n in lines[0] for n in names)


def shown(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:150]


def image_folder(root: Path, make: Callable[[np.random.Generator], Image.Image] | None = None) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = make(rng) if make else Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
                image.save(root / split / label / f"{i:02d}.png")
    return root


def data_rows(tmp: Path, data: Path, train: Callable, record: Callable) -> None:
    odd = image_folder(tmp / "odd_size")
    Image.new("RGB", (10, 10)).save(odd / "test" / "b" / "x.png")
    rc, _, err = train(tmp / "run_odd", odd, "data.image_size=null")
    record("a test image of another size, data.image_size=null", f"exit {rc}: {shown(err)}",
           one_line(rc, err, "x.png", "10x10") and not (tmp / "run_odd" / "checkpoints").exists())
    big = image_folder(tmp / "too_big")
    Image.new("RGB", (16, 16)).save(big / "test" / "a" / "zz.png")
    rc, _, err = train(tmp / "run_pad", big, "data.resize=pad")
    record("resize=pad with a 16x16 test image and data.image_size=8", f"exit {rc}: {shown(err)}",
           one_line(rc, err, "zz.png", "pad") and not (tmp / "run_pad" / "checkpoints").exists())
    deep = image_folder(tmp / "sixteen_bit", lambda rng: Image.fromarray(rng.integers(0, 65536, (8, 8), dtype=np.uint16)))
    rc, _, err = train(tmp / "run_16", deep, "trainer.max_steps=2")
    from glow.data import ImageDataModule

    dm = ImageDataModule("imagefolder", path=str(deep), image_size=8, batch_size=8, num_workers=0)
    dm.setup()
    mean = float(torch.cat([x for x, _ in dm.test_dataloader()]).float().mean())
    record("a folder of 16-bit PNGs (mode I;16)", f"exit {rc}; test pixel mean {mean:.1f} (white was 254.7)",
           rc == 0 and 100 < mean < 155)
    for kind, make in (("float (mode F) TIFF", lambda p: Image.fromarray(np.ones((8, 8), np.float32)).save(p, "TIFF")),
                       ("decompression-bomb PNG (36M pixels)", lambda p: Image.new("1", (6000, 6000)).save(p, "PNG"))):
        bad = image_folder(tmp / f"bad_{kind[:5]}")
        make(bad / "train" / "a" / "zz.png")
        rc, _, err = train(tmp / f"run_{kind[:5]}", bad)
        record(f"a {kind} named .png in train/", f"exit {rc}: {shown(err)}", one_line(rc, err, "zz.png"))
    if hasattr(os, "mkfifo"):
        fifo = image_folder(tmp / "fifo")
        os.mkfifo(fifo / "train" / "a" / "zz.png")
        start = time.time()
        rc, _, err = train(tmp / "run_fifo", fifo, "trainer.max_steps=2")
        record("a FIFO named like an image in train/", f"exit {rc} in {time.time() - start:.0f} s; named in a "
               f"warning: {'zz.png' in err}", rc == 0 and "zz.png" in err)


def dataset_rows(tmp: Path, record: Callable) -> None:
    tiny = ["debug=default", "logger=none", "data.num_workers=0", "trainer.max_steps=2"]
    shared = Path(os.environ.get("GLOW_SHARED_DATASETS", REPO.parent / "shared" / "datasets")) / "MNIST" / "raw"
    if shared.is_dir():
        raw = tmp / "mnist_root" / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for f in shared.iterdir():
            (raw / f.name).write_bytes(f.read_bytes()[:100_000] if f.name.startswith("t10k-images") else f.read_bytes())
        rc, _, err = run("train.py", f"data.root={raw.parents[1]}", f"hydra.run.dir={tmp / 'run_mnist'}", *tiny)
        record("a truncated MNIST t10k-images file (fallback on)", f"exit {rc}: {shown(err)}",
               one_line(rc, err, "t10k-images-idx3-ubyte", "corrupt") and "digits" not in err)
    rc, _, err = run("train.py", "data=cifar10", "data.download=false", f"data.root={tmp / 'none'}",
                     f"hydra.run.dir={tmp / 'run_cifar'}", *tiny)
    record("data=cifar10 data.download=false with no data", f"exit {rc}: {shown(err)}",
           one_line(rc, err, "cifar-10-batches-py/{data_batch_1", "data.download=true"))
    rc, _, err = run("train.py", "data=imagefolder", f"hydra.run.dir={tmp / 'run_nopath'}", *tiny)
    record("data=imagefolder without data.path", f"exit {rc}: {shown(err)}", one_line(rc, err, "data.path"))


def key_rows(tmp: Path, data: Path, train: Callable, record: Callable) -> None:
    for attack, extra, key in (("a batch larger than the data set", "data.batch_size=512", "data.batch_size=512"),
                               ("trainer.val_check_interval=0", "trainer.val_check_interval=0",
                                "trainer.val_check_interval"),
                               ("a seed above 2^64", "seed=36893488147419103232", "seed="),
                               ("an unknown key (modle.steps=2)", "modle.steps=2", "did you mean model.steps")):
        rc, _, err = train(tmp / "run_key", data, extra)
        record(attack, f"exit {rc}: {shown(err)}", one_line(rc, err, key))
    if not torch.cuda.is_available():
        rc, _, err = train(tmp / "run_gpu", data, "trainer=gpu")
        record("trainer=gpu on a CPU-only machine", f"exit {rc}: {shown(err)}", one_line(rc, err, "trainer=cpu"))
    rc, _, err = run("train.py", "experiment=mnist_class", "model=realnvp", f"hydra.run.dir={tmp / 'run_preset'}")
    record("experiment=mnist_class model=realnvp (the experiment's additive couplings would win)",
           f"exit {rc}: {shown(err)[:120]}", one_line(rc, err, "model.coupling=additive (realnvp: affine)"))
    rc, _, err = run("scripts/benchmark.py", "modle.steps=2")
    record("benchmark.py modle.steps=2 (was silently ignored)", f"exit {rc}: {shown(err)}", one_line(rc, err, "modle"))
    slow = []
    for script in HELP:
        start = time.time()
        rc, out, _ = run(script, "--help", f"hydra.run.dir={tmp / 'run_help'}")
        slow += [] if rc == 0 and out.startswith("usage:") and time.time() - start < 30 else [script]
    record("--help on every entry point (runs nothing, < 30 s)", f"{len(HELP) - len(slow)} of {len(HELP)} "
           f"print their page{'; not: ' + ', '.join(slow) if slow else ''}",
           not slow and not (tmp / "run_help").exists())


def sample_rows(tmp: Path, good: Path, record: Callable) -> None:
    (tmp / "notes.png").write_text("not an image")
    Image.new("1", (6000, 6000)).save(tmp / "bomb.png")
    Image.new("L", (8, 8)).save(tmp / "small.png")
    base = [f"ckpt_path={good}", f"hydra.run.dir={tmp / 'sample'}", "device=cpu"]
    for attack, extra, key in (("sample.py n=10**7", ["n=10000000"], "n=10000000"),
                               ("sample.py images=[a text file]", ["task=reconstruct", f"images=[{tmp / 'notes.png'}]"],
                                "notes.png"),
                               ("sample.py mask_image=<decompression bomb>",
                                ["task=inpaint", f"images=[{tmp / 'small.png'}]", f"mask_image={tmp / 'bomb.png'}"],
                                "bomb.png")):
        rc, _, err = run("sample.py", *base, *extra)
        record(attack, f"exit {rc}: {shown(err)}", one_line(rc, err, key))
    checkpoint = torch.load(good, weights_only=True)
    for attack, change in (("n_bits=0", lambda h: h.update(n_bits=0)),
                           ("hidden_channels=60000 (14e9 weights, ~54 GB)",
                            lambda h: h["model_config"].update(hidden_channels=60000))):
        crafted = dict(checkpoint, hyper_parameters={**checkpoint["hyper_parameters"],
                                                     "model_config": dict(checkpoint["hyper_parameters"]["model_config"])})
        change(crafted["hyper_parameters"])
        path = tmp / "crafted.ckpt"
        torch.save(crafted, path)
        start = time.time()
        rc, _, err = run("sample.py", *base[1:], f"ckpt_path={path}")
        record(f"a crafted checkpoint with {attack} to sample.py", f"exit {rc} in {time.time() - start:.0f} s: "
               f"{shown(err)[:110]}", one_line(rc, err, "crafted.ckpt"))


def input_attacks(tmp: Path, data: Path, good: Path, train: Callable, record: Callable) -> None:
    """Every input row; ``train(run_dir, data, *overrides)`` and ``record(attack, outcome, passed)`` are the
    drill's own."""
    data_rows(tmp, data, train, record)
    dataset_rows(tmp, record)
    key_rows(tmp, data, train, record)
    sample_rows(tmp, good, record)
