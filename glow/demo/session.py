"""What the web page knows about its checkpoint: the model, where it came from, and its test images.

One ``DemoSession`` per server. It loads the model through ``glow.sampling.load`` (the loader of
sample.py), reads the run directory's ``results.json`` and ``.hydra/config.yaml`` when they are
there, and builds the data module of test images only when a tab first asks for one.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from hydra.utils import instantiate

from glow.data.checks import check_image_shape
from glow.density import DensityModel
from glow.errors import ConfigError, first_line, unwrap
from glow.run_config import run_data_node
from glow.sampling.load import load_checkpoint, rebuild


class DemoInputError(ValueError):
    """Bad input from the page (an image, a mask, an index); the message is shown on the page as it is."""


# an absolute path (not a URL's //host part): the page shows its last component only
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~])(?:[A-Za-z]:)?(?:/[^\s/'\"(),;:]+)+/?")


def redact_paths(text: str) -> str:
    """``text`` with every absolute path cut to ``.../<last part>``: the page never shows where files live on
    the server (a data root, the run directory, Gradio's upload cache)."""
    return _ABSOLUTE_PATH.sub(lambda m: ".../" + (m.group(0).rstrip("/").rsplit("/", 1)[-1]), text)


def newest_checkpoint(root: str | Path = "outputs") -> Path | None:
    """The most recently written ``last.ckpt`` under ``root`` (train.py's run directories), or None."""
    found = [p for p in Path(root).glob("**/last.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def run_dir_of(ckpt_path: Path) -> Path:
    """train.py writes <run dir>/checkpoints/<name>.ckpt."""
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent


@dataclass
class DemoSession:
    model: DensityModel
    ckpt_path: Path
    hparams: dict
    run_config: DictConfig | None      # the run's .hydra/config.yaml, when train.py ran under Hydra
    results: dict | None               # the run's results.json
    data_config: DictConfig | None     # where the test images come from (None: uploads only)
    batch_size: int = 64
    _test_set: object = field(default=None, repr=False)
    _test_error: str | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, ckpt_path: str | Path, data_config: DictConfig | None = None, device: str = "cpu",
             use_ema: bool = True, batch_size: int = 64) -> "DemoSession":
        """Load a train.py checkpoint. Test images come from the run's own data config when the run
        directory has one, else from ``data_config`` (the demo's ``data`` group)."""
        ckpt_path = Path(ckpt_path)
        checkpoint = load_checkpoint(ckpt_path)
        hparams = checkpoint.get("hyper_parameters", {})
        model = rebuild(checkpoint, ckpt_path, use_ema).to(device)
        run_dir = run_dir_of(ckpt_path)
        run_config = _read_yaml(run_dir / ".hydra" / "config.yaml")
        results = _read_json(run_dir / "results.json")
        try:  # the run's data config (glow.run_config: the same as sample.py's and the scripts')
            data_config = run_data_node(ckpt_path, checkpoint)[0] or data_config
        except ConfigError:  # a damaged run config only costs the test images, never the page
            pass
        return cls(model, ckpt_path, hparams, run_config, results, data_config, batch_size)

    @property
    def display_name(self) -> str:
        """The run directory's name and the checkpoint's, never a server path."""
        return f"{run_dir_of(self.ckpt_path).name}/{self.ckpt_path.name}"

    @property
    def resize(self) -> str | None:
        """How the run's data reached the model's size (pad, resize, center_crop): uploads are fitted the same way."""
        return self.data_config.get("resize") if self.data_config is not None else None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.model.image_shape)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def test_set(self):
        """The test split of the data config (built once), or DemoInputError saying why there is none."""
        with self._lock:
            if self._test_set is None and self._test_error is None:
                self._test_set, self._test_error = _build_test_set(self.data_config, self.image_shape)
        if self._test_error is not None:
            raise DemoInputError(self._test_error)
        return self._test_set

    def test_image(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 [C, H, W] and label of test image ``index``."""
        dataset = self.test_set()
        if index is None or float(index) != int(float(index)) or not 0 <= int(float(index)) < len(dataset):
            raise DemoInputError(f"test image index {index!r} is not allowed: use an integer in 0..{len(dataset) - 1}")
        items = dataset.subset(torch.tensor([int(float(index))]), flip=False)
        x, y = items[0]
        return x, y


def _build_test_set(data_config: DictConfig | None, image_shape) -> tuple[object, str | None]:
    if data_config is None:
        return None, "no test images: this checkpoint's run has no data config; upload an image instead"
    try:
        dm = instantiate(data_config, num_workers=0)
        dm.prepare_data()
        dm.setup()
        check_image_shape(dm.image_shape, image_shape, data_config.get("name", "?"))
    # a data module raises many kinds (hydra wraps them): each only costs the test images, never the page
    except Exception as err:
        message = first_line(unwrap(err))
        return None, f"no test images ({message}): upload an image instead"
    return dm.test_set, None


def _read_yaml(path: Path) -> DictConfig | None:
    if not path.is_file():
        return None
    try:
        cfg = OmegaConf.load(path)
    except Exception:  # a damaged run config only costs the test images, never the page
        return None
    return cfg if isinstance(cfg, DictConfig) else None


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
