"""A small digit classifier, to ask whether inpainting completions are digits and which ones
(scripts/train_digit_classifier.py trains it on MNIST train; scripts/evaluate_inpainting.py scores with it).

Two conv blocks and a two-layer head on uint8 images as the data module gives them (MNIST padded to
32x32). Its checkpoint is a plain dict of tensors and numbers, read with weights_only=True.

``agreement`` compares the classes of the completions with the true labels:

  classifier_agreement        fraction of all completions classified as the image's true label
  classifier_agreement_mean   fraction of images whose mean completion is classified correctly
  classes_per_image           mean number of distinct classes among an image's n completions
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glow.checkpoints import atomic_save
from glow.errors import CheckpointError

FORMAT = "glow.digit_classifier/1"


class DigitClassifier(nn.Module):
    def __init__(self, channels: int = 1, classes: int = 10, width: int = 32):
        super().__init__()
        self.config = {"channels": channels, "classes": classes, "width": width}
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7))  # 7x7 whatever the image size (28 or 32)
        self.head = nn.Sequential(nn.Linear(2 * width * 49, 128), nn.ReLU(), nn.Linear(128, classes))

    def forward(self, images: Tensor) -> Tensor:
        """uint8 (or [0, 255] float) images [B, C, H, W] -> logits [B, classes]."""
        return self.head(self.features(images.float() / 255 - 0.5).flatten(1))

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 512) -> Tensor:
        """Class of each image [B, C, H, W] (any leading dims before C, H, W are kept)."""
        was_training = self.training
        self.eval()
        flat = images.reshape(-1, *images.shape[-3:])
        labels = torch.cat([self(chunk).argmax(1) for chunk in flat.split(batch_size)])
        self.train(was_training)
        return labels.view(images.shape[:-3])


def train_classifier(images: Tensor, labels: Tensor, steps: int = 1500, batch_size: int = 128, lr: float = 2e-3,
                     seed: int = 0) -> DigitClassifier:
    """Adam on cross-entropy over random mini-batches of uint8 images [N, C, H, W] and labels [N]."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = DigitClassifier(images.shape[1], int(labels.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    for _ in range(steps):
        rows = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
        loss = F.cross_entropy(model(images[rows]), labels[rows].long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def accuracy(model: DigitClassifier, images: Tensor, labels: Tensor) -> float:
    return (model.predict(images) == labels.long()).float().mean().item()


def agreement(classes: Tensor, labels: Tensor, mean_classes: Tensor | None = None) -> dict:
    """Figures of the classes [N, n] of n completions per image against the true labels [N]
    (and of the classes [N] of each image's mean completion, when given)."""
    labels = labels.long().view(-1, 1)
    figures = {"classifier_agreement": (classes == labels).float().mean().item(),
               "classes_per_image": float(sum(len(set(row.tolist())) for row in classes) / classes.shape[0])}
    if mean_classes is not None:
        figures["classifier_agreement_mean"] = (mean_classes.view(-1, 1) == labels).float().mean().item()
    return figures


def save_classifier(model: DigitClassifier, path: str | Path, test_accuracy: float) -> None:
    atomic_save({"format": FORMAT, "config": model.config, "state_dict": model.state_dict(),
                 "test_accuracy": test_accuracy}, Path(path))


def load_classifier(path: str | Path) -> tuple[DigitClassifier, float]:
    """(classifier, its test accuracy) from ``save_classifier``'s file; one line naming the file if not."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"classifier_ckpt={str(path)!r} cannot be read: {type(err).__name__}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"classifier_ckpt={str(path)!r} is not a digit classifier written by "
                              "scripts/train_digit_classifier.py")
    model = DigitClassifier(**state["config"])
    model.load_state_dict(state["state_dict"])
    return model.eval(), float(state["test_accuracy"])
