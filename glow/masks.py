"""Inpainting masks. Convention: 1 marks a MISSING pixel. Shape [B, 1, H, W], float.

Kinds: ``center`` (a centred square), ``boxes`` (random rectangles), ``half`` (left, right, top or
bottom half), ``pixels`` (each pixel missing with probability ``pixel_rate``). ``MaskSampler`` draws
one kind per image from a weighted mix, for training conditional models.
"""

from __future__ import annotations

import torch
from torch import Tensor

MASK_KINDS = ("center", "boxes", "half", "left", "right", "top", "bottom", "pixels", "none")


def make_mask(kind: str, batch: int, size: tuple[int, int], center_fraction: float = 0.5, pixel_rate: float = 0.5,
              max_boxes: int = 3, generator: torch.Generator | None = None, device=None) -> Tensor:
    if kind not in MASK_KINDS:
        raise ValueError(f"mask={kind!r} is not allowed: use one of {', '.join(MASK_KINDS)}")
    h, w = size
    mask = torch.zeros(batch, 1, h, w)
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    if kind == "center":
        mh, mw = max(1, round(h * center_fraction)), max(1, round(w * center_fraction))
        top, left = (h - mh) // 2, (w - mw) // 2
        mask[:, :, top:top + mh, left:left + mw] = 1
    elif kind == "boxes":
        for i in range(batch):
            for _ in range(1 + int(rand(1).item() * max_boxes)):
                bh, bw = 1 + int(rand(1).item() * h / 2), 1 + int(rand(1).item() * w / 2)
                top, left = int(rand(1).item() * (h - bh + 1)), int(rand(1).item() * (w - bw + 1))
                mask[i, :, top:top + bh, left:left + bw] = 1
    elif kind == "half":
        sides = (rand(batch) * 4).long()
        for i, side in enumerate(sides.tolist()):
            mask[i] = make_mask(("left", "right", "top", "bottom")[side], 1, size)[0]
    elif kind == "left":
        mask[..., : w // 2] = 1
    elif kind == "right":
        mask[..., w // 2:] = 1
    elif kind == "top":
        mask[..., : h // 2, :] = 1
    elif kind == "bottom":
        mask[..., h // 2:, :] = 1
    elif kind == "pixels":
        mask = (rand(batch, 1, h, w) < pixel_rate).float()
    return mask.to(device) if device is not None else mask


class MaskSampler:
    """Draws a mask per image from a weighted mix of kinds, e.g. {center: 1, boxes: 1, half: 1, pixels: 1}."""

    def __init__(self, mix: dict[str, float] | None = None, center_fraction: float = 0.5, pixel_rate: float = 0.5):
        self.mix = dict(mix or {"center": 1.0, "boxes": 1.0, "half": 1.0, "pixels": 1.0})
        for kind, weight in self.mix.items():
            if kind not in MASK_KINDS or weight < 0:
                raise ValueError(f"masks.mix.{kind}={weight!r} is not allowed: kinds are {', '.join(MASK_KINDS)}, "
                                 "weights non-negative")
        if sum(self.mix.values()) <= 0:
            raise ValueError("masks.mix is not allowed to be all zero: give at least one kind a positive weight")
        self.center_fraction, self.pixel_rate = center_fraction, pixel_rate

    def __call__(self, batch: int, size, device=None, generator: torch.Generator | None = None) -> Tensor:
        kinds = list(self.mix)
        weights = torch.tensor([self.mix[k] for k in kinds], dtype=torch.float)
        choice = torch.multinomial(weights, batch, replacement=True, generator=generator)
        mask = torch.zeros(batch, 1, *size)
        for index, kind in enumerate(kinds):
            rows = (choice == index).nonzero().flatten()
            if len(rows):
                mask[rows] = make_mask(kind, len(rows), tuple(size), self.center_fraction, self.pixel_rate,
                                       generator=generator)
        return mask.to(device) if device is not None else mask
