"""What a model is conditioned on: nothing (None), a class label ("class") or a masked image ("image").

This is the one module that reads the ``conditional`` string. Everything else asks it:

* building the model: how many label classes the priors see, how many feature channels the coupling
  networks and priors get, whether there is a condition encoder (``Kind``);
* running it: which part of ``cond`` goes where (``route``);
* training: the condition of a batch (``training_condition``);
* sampling: which labels a grid uses (``grid_labels``), checking labels (``check_sampling_labels``,
  ``label_problem``) and the condition for encoding real images (``encoding_condition``).

Class labels enter the priors only (Glow's ycond), so the flow itself ignores them. The image
condition is (observed image with the hole zeroed, hole mask), encoded by a small CNN into features
at every level's resolution (c-Glow, Lu & Huang 2020).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

CONDITIONALS = (None, "class", "image")


def make_condition(x: Tensor, hole: Tensor) -> Tensor:
    """The inpainting condition: the observed image (missing pixels zeroed) and the hole (1 = missing)."""
    hole = hole.to(x.dtype)
    if hole.dim() == 3:
        hole = hole.unsqueeze(1)
    hole = hole[:, :1].expand(x.shape[0], 1, *x.shape[-2:])
    return torch.cat([x * (1 - hole), hole], dim=1)


@dataclass(frozen=True)
class Kind:
    """A model's conditioning and what it implies for the model's parts."""

    name: str | None
    num_classes: int = 0  # the label space of a class-conditional model, else 0

    @staticmethod
    def of(conditional: str | None, num_classes: int = 10, class_head: bool = False) -> "Kind":
        """Check ``model.conditional`` (and what depends on it) and return its Kind."""
        if conditional not in CONDITIONALS:
            raise ValueError(f"model.conditional={conditional!r} is not allowed: use one of null, class, image")
        if conditional == "class" and (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                                       or num_classes < 1):
            raise ValueError(f"model.num_classes={num_classes!r} is not allowed: use a positive integer")
        if class_head and conditional != "class":
            raise ValueError(f"model.class_head={class_head!r} is not allowed: the classification head needs "
                             f"model.conditional=class")
        return Kind(conditional, num_classes if conditional == "class" else 0)

    @property
    def labels(self) -> bool:
        """Class-conditional: integer labels reach every prior."""
        return self.name == "class"

    @property
    def image(self) -> bool:
        """Image-conditional (inpainting): encoded features reach every coupling network and prior."""
        return self.name == "image"

    @property
    def samples_from_nothing(self) -> bool:
        """Whether the model can sample without a masked image to complete."""
        return not self.image

    def feature_channels(self, cond_channels: int) -> int:
        return cond_channels if self.image else 0

    def route(self, cond: Tensor | None, encoder, num_levels: int) -> tuple[list[Tensor | None], Tensor | None]:
        """``cond`` -> (per-level features for couplings and priors, labels for priors)."""
        if self.name is None:
            return [None] * num_levels, None
        if cond is None:
            raise ValueError(f"this model is conditional ({self.name}): pass cond")
        if self.labels:
            return [None] * num_levels, cond
        return encoder(cond), None


def config_from_data(conditional: str | None, data_num_classes: int) -> dict:
    """What the model config takes from the data: a class-conditional model its label space."""
    return {"num_classes": data_num_classes} if conditional == "class" else {}


def training_condition(kind: Kind, images: Tensor, labels: Tensor, hole_sampler, bin_centres,
                       generator=None):
    """What a training batch of uint8 ``images`` is conditioned on -> (cond, hole or None). The image
    condition holds ``bin_centres(images)``, never the dequantised values being modelled: otherwise
    the flow could copy the noise and put unbounded density on the observed pixels."""
    if kind.labels:
        return labels, None
    if kind.image:
        hole = hole_sampler(images.shape[0], images.shape[-2:], device=images.device, generator=generator)
        return make_condition(bin_centres(images), hole), hole
    return None, None


def encoding_condition(model, x: Tensor, labels: Tensor | None) -> Tensor | None:
    """What encode/decode of real images need. Class labels do not change latents (they enter the
    priors only), so missing or foreign labels become zeros; an inpainting model gets a condition
    with nothing observed."""
    if model.kind.labels:
        ok = labels is not None and labels.dim() == 1 and bool((labels < model.kind.num_classes).all())
        return labels.long() if ok else torch.zeros(x.shape[0], dtype=torch.long)
    if model.kind.image:
        return make_condition(x, torch.ones(x.shape[0], 1, *x.shape[-2:]))
    return None


def grid_labels(model, n: int, label: int | None = None, per_class: bool = False) -> Tensor | None:
    """Labels of a sample grid (None for a model without labels): ``label`` everywhere, else
    0, 1, ..., K-1 repeated to n (``per_class``: each class max(1, n // K) times, class-major)."""
    if not model.kind.labels:
        return None
    if per_class:
        return torch.arange(model.kind.num_classes).repeat_interleave(max(1, n // model.kind.num_classes))
    if label is not None:
        return torch.full((n,), int(label), dtype=torch.long)
    return torch.arange(n) % model.kind.num_classes


def check_sampling_labels(model, labels: Tensor | None, n: int) -> None:
    if model.kind.image:
        raise ValueError("this model is an inpainting model (conditional=image): it samples given a masked "
                         "image (inpainting), not from nothing")
    if model.kind.labels:
        if labels is None or len(labels) != n:
            raise ValueError(f"this model is class-conditional: pass {n} labels")
        if labels.min() < 0 or labels.max() >= model.kind.num_classes:
            raise ValueError(f"labels must be in 0..{model.kind.num_classes - 1}, got {labels.tolist()}")
    elif labels is not None:
        raise ValueError("this model is unconditional: pass no labels")


def require_class_conditional(model) -> None:
    if not model.kind.labels:
        raise ValueError(f"class samples need a class-conditional model (conditional=class), "
                         f"this one has conditional={model.kind.name!r}")


def label_problem(kind: Kind, value) -> str | None:
    """What is wrong with a label key's value (an int, a list or None) for a model of this kind, or None."""
    if value is None:
        return None
    if not kind.labels:
        return "only a class-conditional checkpoint takes labels: use null"
    values = [value] if isinstance(value, int) else list(value)
    if any(v >= kind.num_classes for v in values):
        return f"use labels in 0..{kind.num_classes - 1} (this model's classes)"
    return None
