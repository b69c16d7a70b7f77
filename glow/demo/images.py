"""Pixels in and out of the page: uploads checked against the model, brush strokes as a mask, grids.

Everything the page shows or returns is uint8 (numpy, H x W or H x W x C), so a downloaded image
holds exactly the pixels the model produced; images are shown at their own size and enlarged by the
browser (CSS ``image-rendering: pixelated``), never resampled here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from glow.data import fit_size, read_image
from glow.demo.session import DemoInputError
from glow.quantize import to_uint8
from glow.sampling import blank_nonfinite

# PIL modes whose pixels are one grey value (with or without alpha); every other mode counts as colour
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "F")
MASK_COVERAGE = 0.5   # a model pixel is missing when at least half of its area is painted


def _describe(channels: int) -> str:
    return "1 channel (greyscale)" if channels == 1 else f"{channels} channels (colour)"


def read_upload(path: str | Path | None, image_shape: tuple[int, int, int], what: str = "image",
                resize: str | None = None) -> Tensor:
    """An uploaded file as uint8 [C, H, W], or DemoInputError when it is not an image the model can take.

    An image of another size is fitted the way the run's data was (``resize``: pad, resize or center_crop,
    glow.data.fit_size), so a 28x28 MNIST digit goes to a model that pads MNIST to 32x32."""
    if path is None:
        raise DemoInputError(f"no {what}: upload one first")
    name = Path(path).name
    try:
        with Image.open(path) as im:
            mode, (width, height) = im.mode, im.size
            im.verify()
    # decoders raise many types (OSError, SyntaxError, ValueError...): each one means "not an image"
    except Exception as err:
        raise DemoInputError(f"{name} is not an image file ({type(err).__name__}): upload a PNG or JPEG") from None
    c, h, w = image_shape
    channels = 1 if mode in GREY_MODES else 3
    if channels != c:
        raise DemoInputError(f"{name} has {_describe(channels)} but this model takes {_describe(c)}")
    if (height, width) != (h, w) and (resize is None or h != w):
        raise DemoInputError(f"{name} is {width}x{height} pixels but this model takes {w}x{h} images")
    try:
        x = read_image(str(path), "L" if c == 1 else "RGB")
    except OSError as err:  # pixels that do not decode (a truncated file), a decompression bomb, float pixels
        raise DemoInputError(f"{name} is not a readable image: {str(err).split(': ', 1)[-1][:160]}") from None
    try:
        return fit_size(x, h, resize) if (height, width) != (h, w) else x
    except ValueError:  # pad cannot shrink, center_crop cannot grow
        raise DemoInputError(f"{name} is {width}x{height} pixels: this model takes {w}x{h} images and its data "
                             f"reached that size by resize={resize}, which cannot fit this one") from None


def to_display(x_uint8: Tensor) -> np.ndarray:
    """uint8 [C, H, W] -> numpy H x W (greyscale) or H x W x 3, what gr.Image shows and saves losslessly."""
    array = x_uint8.detach().cpu().permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def from_display(array: np.ndarray, channels: int) -> Tensor:
    """The inverse of ``to_display`` (RGB(A) arrays of a greyscale model keep their first channel)."""
    x = torch.from_numpy(np.ascontiguousarray(array))
    x = x.unsqueeze(-1) if x.dim() == 2 else x
    return x[..., :channels].permute(2, 0, 1).contiguous()


def enlarge(x_uint8: Tensor, factor: int) -> Tensor:
    """Nearest-neighbour enlargement by an integer factor (each model pixel becomes factor x factor)."""
    return x_uint8.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def display_factor(size: int, target: int = 256) -> int:
    """The integer enlargement that brings a side of ``size`` pixels to about ``target``."""
    return max(1, target // size)


def mask_from_layers(layers, image_shape: tuple[int, int, int]) -> Tensor:
    """The brush strokes of an image editor (RGBA layers, any size) as a mask [1, H, W] (1 = missing).

    A model pixel is missing when at least MASK_COVERAGE of its area is painted; an empty mask is an error.
    """
    _, h, w = image_shape
    painted = [np.asarray(layer) for layer in (layers or []) if layer is not None]
    if not painted:
        raise DemoInputError("the mask is empty: paint the missing region over the image with the brush first")
    alpha = np.zeros(painted[0].shape[:2], dtype=np.float32)
    for layer in painted:
        if layer.shape[:2] != alpha.shape:
            raise DemoInputError("the brush layers do not match the image: load the image again and repaint")
        strokes = layer[..., 3] if layer.ndim == 3 and layer.shape[-1] == 4 else layer.reshape(*layer.shape[:2], -1).max(-1)
        alpha = np.maximum(alpha, (strokes > 0).astype(np.float32))
    coverage = F.interpolate(torch.from_numpy(alpha)[None, None], size=(h, w), mode="area")[0]
    mask = (coverage >= MASK_COVERAGE).float()
    if not mask.any():
        raise DemoInputError("the mask is empty: paint the missing region over the image with the brush "
                             "(strokes thinner than half a pixel of the model's image do not count)")
    return mask


def grid(images: Tensor, n_bits: int, nrow: int) -> tuple[np.ndarray, int]:
    """Model-space images -> one uint8 grid (torchvision's make_grid, 1-pixel white gaps) and how many
    were non-finite (shown mid-grey, as sample.py does)."""
    images, bad = blank_nonfinite(images)
    pixels = to_uint8(images.cpu(), n_bits)
    out = make_grid(pixels, nrow=nrow, padding=1, pad_value=255)
    return to_display(out), bad
