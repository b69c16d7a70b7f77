"""The real images of sample.py's tasks: image files, or data-set indices of the data group's split,
fitted to the model's size and checked against its image shape."""

from __future__ import annotations

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from glow.data import CorruptImageError, fit_size, read_image
from glow.data.checks import check_image_shape
from glow.density import DensityModel
from glow.errors import ConfigError, fail, first_line, unwrap


def datamodule(cfg: DictConfig, model: DensityModel):
    """The data group's module, set up, checked against the model's image shape."""
    try:
        dm = instantiate(cfg.data)
        dm.prepare_data()
        dm.setup()
    except (ValueError, FileNotFoundError, RuntimeError, InstantiationException) as err:
        err = unwrap(err)
        if isinstance(err, (ValueError, FileNotFoundError, RuntimeError)):
            raise ConfigError(first_line(err)) from err
        raise
    check_image_shape(dm.image_shape, model.image_shape, cfg.data.name)
    return dm


def take(dataset, indices: list[int], key: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    bad = [i for i in indices if i >= len(dataset)]
    if bad:
        fail(key, indices, f"the {split} split has {len(dataset)} images: use indices in 0..{len(dataset) - 1}")
    items = dataset.subset(torch.tensor(indices, dtype=torch.long), flip=False)
    xs, ys = zip(*(items[i] for i in range(len(items))))
    return torch.stack(xs), torch.stack(ys)


def read_user_image(key: str, path, channels: int) -> torch.Tensor:
    """uint8 [C, H, W] of a user's image file, or one line naming the key and the file (any bit depth reads)."""
    try:
        return read_image(str(path), "L" if channels == 1 else "RGB")
    except CorruptImageError as err:  # its header passed validate_sample, its pixels do not decode
        fail(key, str(path), f"is not a readable image ({str(err).split(': ', 1)[-1]})")


def image_files(paths, model: DensityModel, resize: str) -> torch.Tensor:
    """uint8 [N, C, H, W] of image files, fitted to the model's size the data group's way."""
    c, h, w = model.image_shape
    out = []
    for path in paths:
        x = read_user_image("images", path, c)
        if tuple(x.shape[-2:]) != (h, w):
            try:
                x = fit_size(x, h, resize)
            except ValueError as err:
                fail("images", list(paths), f"{path}: {err}")
        out.append(x)
    return torch.stack(out)


def real_images(cfg: DictConfig, model: DensityModel, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images (and labels, or None for files): ``images``, else ``indices``, else the first ``count``."""
    if cfg.images is not None:
        return image_files(list(cfg.images), model, cfg.data.get("resize", "resize")), None
    dm = datamodule(cfg, model)
    dataset = dm.test_set if cfg.split == "test" else dm.train_set
    indices = list(cfg.indices) if cfg.indices is not None else list(range(min(count, len(dataset))))
    return take(dataset, indices, "indices", cfg.split)
