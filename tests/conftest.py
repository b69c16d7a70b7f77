"""Shared fixtures: compose the real Hydra config with a CPU trainer, tiny model, no workers, no logger."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parents[1]

# The test models are tiny: with two OpenMP threads per op they spend their time synchronising
# (15 s instead of 0.1 s for 20 MALA steps when another process competes for the 2 cores).
torch.set_num_threads(1)
CONF = REPO / "conf"


def shared_datasets() -> Path | None:
    candidates = [os.environ.get("GLOW_SHARED_DATASETS"), REPO.parent / "shared" / "datasets"]
    for c in candidates:
        if c and (Path(c) / "MNIST" / "raw").is_dir():
            return Path(c)
    return None


def require_mnist() -> Path:
    root = shared_datasets()
    if root is None:
        pytest.skip("real MNIST copy absent: set GLOW_SHARED_DATASETS or put ../shared/datasets beside the repo")
    return root


def compose_train(tmp_path: Path, overrides: list[str] = (), debug: str = "default"):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = [f"debug={debug}", "logger=none", "data.num_workers=0", f"paths.output_dir={tmp_path}",
                "+trainer.enable_model_summary=false"]
        return compose(config_name="train", overrides=base + list(overrides))


@pytest.fixture
def mnist_root() -> Path:
    return require_mnist()


@pytest.fixture
def synthetic_folder(tmp_path: Path) -> Path:
    """A tiny image folder of random 16x16 RGB PNGs in two classes, with train/ and test/."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "synthetic"
    for split, count in (("train", 48), ("test", 16)):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count // 2):
                pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root
