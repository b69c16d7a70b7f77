"""Train the small digit classifier (glow.digit_classifier) on MNIST train, report its test accuracy,
and write it where scripts/evaluate_inpainting.py reads it (``classifier_ckpt=PATH``).

    python scripts/train_digit_classifier.py out=digit_classifier.pt
    python scripts/evaluate_inpainting.py ckpt_path=<c-Glow ckpt> classifier_ckpt=digit_classifier.pt

The images are the data module's (MNIST padded to 32x32, the inpainting models' size). About a minute
on one CPU thread.
"""

from __future__ import annotations

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from glow.digit_classifier import accuracy, save_classifier, train_classifier
from glow.errors import ConfigError, exit_with_config_error, is_int


def stack(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        return tensors[0], tensors[1]
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])


def run(cfg: DictConfig) -> dict:
    try:
        out = None if OmegaConf.is_missing(cfg, "out") else cfg.out
        if not isinstance(out, str) or not out:
            raise ConfigError(f"out={out!r} is not allowed: give the classifier's file, e.g. out=digit_classifier.pt")
        steps = cfg.classifier_steps
        if not is_int(steps) or steps < 1:
            raise ConfigError(f"classifier_steps={steps!r} is not allowed: use a positive integer")
        datamodule = instantiate(cfg.data)
    except (ConfigError, ValueError) as err:
        exit_with_config_error(err)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    train_images, train_labels = stack(datamodule.train_set)
    test_images, test_labels = stack(datamodule.test_set)
    model = train_classifier(train_images, train_labels, steps=steps, seed=cfg.seed)
    test_accuracy = accuracy(model, test_images, test_labels)
    save_classifier(model, cfg.out, test_accuracy)
    print(f"digit classifier: test accuracy {test_accuracy:.4f} on {len(test_labels)} {cfg.data.name} test images "
          f"({steps} steps on {len(train_labels)} training images); written to {cfg.out}")
    return {"test_accuracy": test_accuracy, "path": str(cfg.out)}


@hydra.main(version_base="1.3", config_path="../conf", config_name="digit_classifier")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
