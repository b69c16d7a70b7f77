"""sample.py's task=manipulate: move test images along an attribute direction in latent space."""

from __future__ import annotations

import torch

from glow.conditioning import encoding_condition
from glow.errors import fail, is_int
from glow.quantize import preprocess
from glow.sampling.manipulate import attribute_direction, manipulate
from glow.sampling.task_inputs import datamodule, real_images, take


def _resolve_attribute(cfg, dm) -> tuple[int, str, bool]:
    """-> (column or class label, its name, whether it is a CelebA attribute)."""
    attribute = cfg.attribute
    names = dm.attribute_names if getattr(dm, "target", "class") == "attr" else None
    pool = names if names is not None else dm.class_names
    if is_int(attribute) and 0 <= attribute < len(pool):
        index = int(attribute)
    elif str(attribute) in pool:
        index = pool.index(str(attribute))
    else:
        what = "a CelebA attribute name or index 0..39" if names is not None else \
            f"a class label 0..{len(pool) - 1} of {cfg.data.name} (or data.target=attr on celeba)"
        fail("attribute", attribute, f"use {what}")
    return index, pool[index], names is not None


def task_manipulate(cfg, model, n, generator):
    dm = datamodule(cfg, model)
    index, name, is_attr = _resolve_attribute(cfg, dm)
    if is_attr and cfg.baseline is not None:
        fail("baseline", cfg.baseline, "CelebA attributes are present or absent: use null")
    if not is_attr and cfg.baseline is not None:
        if not (is_int(cfg.baseline) and 0 <= cfg.baseline < dm.num_classes and cfg.baseline != index):
            fail("baseline", cfg.baseline, f"use a class label 0..{dm.num_classes - 1} other than attribute={index}")

    def groups(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if is_attr:
            has = labels[:, index] == 1
            return has, ~has
        has = labels == index
        return has, (labels == cfg.baseline) if cfg.baseline is not None else ~has

    # the direction, from training images
    train = dm.train_set
    has, without = groups(train.labels)
    picked = torch.cat([has.nonzero()[:cfg.direction_images, 0], without.nonzero()[:cfg.direction_images, 0]])
    if not has.any() or not without.any():
        fail("attribute", cfg.attribute, f"the training split needs images with and without it "
                                          f"(found {int(has.sum())} with, {int(without.sum())} without)")
    x_uint8, labels = take(train, picked.tolist(), "direction_images", "train")
    x = preprocess(x_uint8, model.n_bits, dequantize=False)
    direction = attribute_direction(model, x, has[picked], encoding_condition(model, x, labels), cfg.batch_size)

    # the images to edit: given, else the first n test images without the attribute
    if cfg.images is None and cfg.indices is None:
        _, test_without = groups(dm.test_set.labels)
        chosen = test_without.nonzero()[:n, 0].tolist()
        x_uint8, labels = take(dm.test_set, chosen, "indices", "test")
    else:
        x_uint8, labels = real_images(cfg, model, n)
    x = preprocess(x_uint8, model.n_bits, dequantize=False)
    scales = [float(s) for s in cfg.scales]
    images = manipulate(model, x, direction, scales, encoding_condition(model, x, labels), cfg.batch_size)
    away = f" (from {cfg.baseline})" if cfg.baseline is not None else ""
    return images, len(scales), (f"{x.shape[0]} images moved along the '{name}'{away} direction at scales "
                                 f"{scales}, from {int(has[picked].sum())} + {int((~has[picked]).sum())} images")
