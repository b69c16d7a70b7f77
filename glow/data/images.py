"""Pixels: decoding image files of any bit depth and mode into uint8, and bringing uint8 images to one
size and channel count. Checking every file of a folder before training is glow.data.screening's.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF


def fit_size(x: Tensor, size: int | None, mode: str) -> Tensor:
    """Bring uint8 images ``[..., C, H, W]`` to ``[..., C, size, size]`` (``size=None``: as is).

    pad: zero-pad symmetrically (extra pixel bottom/right), e.g. MNIST 28 -> 32;
    resize: shorter side to ``size`` (antialiased bilinear), then a centre crop;
    center_crop: a centre crop only.
    """
    if size is None:
        return x
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if mode == "pad":
        if h > size or w > size:
            raise ValueError(f"a {h}x{w} image cannot be zero-padded to {size}x{size}")
        top, left = (size - h) // 2, (size - w) // 2
        return F.pad(x, (left, size - w - left, top, size - h - top))
    if mode == "center_crop" and (h < size or w < size):
        raise ValueError(f"a {h}x{w} image cannot be centre-cropped to {size}x{size}")
    if mode == "resize":
        x = TF.resize(x, [size], antialias=True)
    return TF.center_crop(x, [size, size])


def fit_in_chunks(images: Tensor, size: int | None, mode: str, chunk: int = 4096) -> Tensor:
    """``fit_size`` over a whole split, a chunk at a time to bound the float intermediates."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    return torch.cat([fit_size(part, size, mode) for part in images.split(chunk)])


class CorruptImageError(OSError):
    """An image file could not be decoded, or holds pixels this code does not read; the message names it."""


# Decoding bombs: a small file can declare billions of pixels. Larger images are refused from the header,
# before any pixel is decoded (a 24-megapixel photo is well inside; PIL's own limit is 89M, and only warns).
MAX_IMAGE_PIXELS = 2 ** 25
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
UNREADABLE_MODES = {"F": "32-bit float pixels (their range is unknown)"}


def mode_problem(mode: str, size: tuple[int, int]) -> str | None:
    """Why an image of PIL ``mode`` and (width, height) ``size`` is refused from its header, or None."""
    w, h = size
    if w < 1 or h < 1:
        return f"empty image {w}x{h}"
    if w * h > MAX_IMAGE_PIXELS:
        return f"{w}x{h} pixels exceed the limit of {MAX_IMAGE_PIXELS} (a decompression bomb?)"
    if mode in UNREADABLE_MODES:
        return f"mode {mode}: {UNREADABLE_MODES[mode]}; save it as an 8- or 16-bit PNG"
    return None


def to_8bit(im: Image.Image, path: str) -> Image.Image:
    """16-bit (and 32-bit integer) pixels scaled to 8 bits, round(v / 257): PIL's own conversion clips them
    at 255, which turns a 16-bit image white. Other modes (1, P, LA, RGBA, CMYK, ...) are PIL's to convert."""
    if im.mode not in SIXTEEN_BIT_MODES and im.mode != "I":
        return im
    pixels = np.asarray(im).astype(np.int64)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise CorruptImageError(f"cannot read image {path}: mode {im.mode} pixels in {pixels.min()}..{pixels.max()} "
                                f"are not 16-bit (0..65535); save it as an 8- or 16-bit PNG")
    return Image.fromarray(np.rint(pixels / 257.0).astype(np.uint8), "L")


def convert(im: Image.Image, mode: str, path: str) -> Image.Image:
    """``im`` as PIL ``mode`` "L" or "RGB", through RGB when PIL has no direct conversion (La, LAB)."""
    im = to_8bit(im, path)
    try:
        return im.convert(mode)
    except ValueError:
        try:
            return im.convert("RGBA" if im.mode.endswith("a") else "RGB").convert(mode)
        except ValueError:
            raise CorruptImageError(f"cannot read image {path}: PIL cannot convert mode {im.mode} to {mode}; "
                                    f"save it as an 8-bit PNG") from None


def read_image(path: str, mode: str) -> Tensor:
    """Decode one image file into uint8 ``[C, H, W]`` (``mode`` "L" or "RGB"), any bit depth: 16-bit pixels
    are scaled to 8 bits, alpha is dropped; huge (decompression bombs) and float images are refused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check the size ourselves
            with Image.open(path) as im:
                problem = mode_problem(im.mode, im.size)
                if problem is None:
                    im = convert(im, mode, path)
    except CorruptImageError:
        raise
    # Decoders raise many types (OSError, SyntaxError, zlib.error, EOFError...); we re-raise
    # them all with the path, which is what one needs to find a bad file among thousands.
    except Exception as err:
        raise CorruptImageError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
    if problem is not None:
        raise CorruptImageError(f"cannot read image {path}: {problem}")
    return TF.pil_to_tensor(im)


def to_channels(x: Tensor, channels: int | None) -> Tensor:
    """uint8 images [N, C, H, W] with C brought to ``channels`` (None: unchanged)."""
    if channels is None or x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    return TF.rgb_to_grayscale(x)


def collate_readable(items):
    """default_collate over the items that could be decoded (unreadable files come as None)."""
    from torch.utils.data import default_collate

    kept = [item for item in items if item is not None]
    if not kept:
        raise CorruptImageError(f"all {len(items)} images of a batch are unreadable (see the warnings above)")
    return default_collate(kept)
