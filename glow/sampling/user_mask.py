"""Inpainting users' own images with their own mask PNG (sample.py task=inpaint images=[a.png] mask_image=m.png).

The mask is a PNG of the image's size: white (> 127) = missing, black = observed. Each image and the
mask are brought to the model's size (zero-padded like the data when the data pads and it fits, e.g.
a 28x28 digit for a 32x32 MNIST model; otherwise resized, aspect not kept); a model-size pixel is
missing if any of its original pixels is. The completions are brought back to the original size
(cropped, or resized back) and only the originally missing pixels are taken from them: every
observed pixel of the user's file is written unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import Tensor

from glow.data.images import CorruptImageError, read_image


def read_mask(path: str, size: tuple[int, int]) -> Tensor:
    """bool [1, H, W] (True = missing) of a mask PNG, which must be ``size`` (the image's H, W)."""
    try:
        mask = read_image(path, "L") > 127  # any bit depth or mode, bombs refused (glow.data.images)
    except CorruptImageError as err:
        raise ValueError(f"{path} is not a readable image ({str(err).split(': ', 1)[-1]})") from None
    if tuple(mask.shape[-2:]) != tuple(size):
        raise ValueError(f"{path} is {mask.shape[-1]}x{mask.shape[-2]} but the image is {size[1]}x{size[0]}: "
                         f"give a mask of the image's size")
    return mask


def _pads(original: tuple[int, int], size: tuple[int, int]) -> tuple[int, int] | None:
    """(top, left) of the zero padding that takes original to size, or None when it does not fit."""
    (h, w), (mh, mw) = original, size
    if h > mh or w > mw:
        return None
    return (mh - h) // 2, (mw - w) // 2


def to_model_size(image: Tensor, mask: Tensor, size: tuple[int, int], pad: bool) -> tuple[Tensor, Tensor]:
    """uint8 image [C, h, w] and float mask [1, h, w] (1 = missing) at the model's size."""
    h, w = image.shape[-2:]
    offsets = _pads((h, w), size) if pad else None
    if offsets is not None:
        top, left = offsets
        border = (left, size[1] - w - left, top, size[0] - h - top)
        return F.pad(image, border), F.pad(mask.float(), border)
    resized = TF.resize(image, list(size), antialias=True)
    # a model pixel is missing when any original pixel under it is (area resampling, then > 0)
    hole = F.adaptive_max_pool2d(mask.float()[None], size)[0] if h >= size[0] and w >= size[1] else \
        (TF.resize(mask.float(), list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=False) > 0).float()
    return resized, hole


def to_original_size(completion: Tensor, original: Tensor, mask: Tensor, pad: bool) -> Tensor:
    """uint8 [n, C, H, W]: the model-size completions [n, C, h, w] brought back to the original's
    size, used ONLY where the original mask is missing; every other pixel is the original's."""
    h, w = original.shape[-2:]
    offsets = _pads((h, w), tuple(completion.shape[-2:])) if pad else None
    if offsets is not None:
        top, left = offsets
        back = completion[..., top:top + h, left:left + w]
    else:
        back = TF.resize(completion, [h, w], antialias=True)
    return torch.where(mask.expand_as(original).unsqueeze(0), back, original.unsqueeze(0))


def save_completions(completions: Tensor, stem: str, out: Path) -> list[Path]:
    """One PNG per completion: <out>/inpaint_<stem>_<k>.png."""
    paths = []
    for k, image in enumerate(completions):
        path = out / f"inpaint_{stem}_{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        TF.to_pil_image(image).save(path)
        paths.append(path)
    return paths
