"""Pixels: decoding image files, bringing uint8 images to one size and channel count, and screening
files before training (``probe``/``screen``).

Screening: every file of the train and test splits is opened (header only, in threads, with a
progress bar for large folders). Unreadable files are listed (count and first names) and skipped;
too many of them, or a split left empty, stop the run before any step. Why up front: a bad file
found by the loader surfaces as a traceback hours into a run, or (in the test split) after all
training, losing the results.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

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
    """An image file could not be decoded; the message names the file."""


def read_image(path: str, mode: str) -> Tensor:
    """Decode one image file into uint8 ``[C, H, W]`` (PIL ``mode`` "L" or "RGB")."""
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
    # Decoders raise many types (OSError, SyntaxError, zlib.error, EOFError...); we re-raise
    # them all with the path, which is what one needs to find a bad file among thousands.
    except Exception as err:
        raise CorruptImageError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
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


# ----------------------------------------------------------------------------- screening

PROGRESS_FROM = 2000  # files; smaller folders are screened in well under a second
SHOW = 5  # names listed in a warning or error


def probe(path: str) -> tuple[int, int] | str:
    """(height, width) from the file's header, or why it cannot be read."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w < 1 or h < 1:
                return f"empty image {w}x{h}"
            return h, w
    # decoders raise OSError, SyntaxError, ValueError, zlib.error...: every one means "unreadable"
    except Exception as err:
        text = str(err).splitlines()[0].replace(repr(path), "the file").replace(path, "the file") if str(err) else ""
        return f"{type(err).__name__}: {text}".rstrip(": ")


def probe_all(paths: Sequence[str], what: str = "images") -> list[tuple[int, int] | str]:
    workers = min(32, 4 * (os.cpu_count() or 1))  # I/O-bound: threads, several per core
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(probe, paths, chunksize=64)
        if len(paths) >= PROGRESS_FROM:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(paths), desc=f"checking {what}", unit="file")
        return list(results)


def screen(splits: dict[str, list[str]], max_bad_fraction: float, where: str
           ) -> tuple[dict[str, list[int]], tuple[int, int]]:
    """Probe every file of every split; returns the indices of the readable files per split and the
    size of the first readable training image. Raises ValueError (one line) when a split is empty or
    the unreadable share exceeds ``max_bad_fraction``; otherwise warns and skips the bad files."""
    for split, paths in splits.items():
        if not paths:
            raise ValueError(f"data.path={where!r}: the {split} split holds no images")
    results = {split: probe_all(paths, f"{split} images") for split, paths in splits.items()}
    bad = [(p, r) for split, paths in splits.items() for p, r in zip(paths, results[split]) if isinstance(r, str)]
    total = sum(len(p) for p in splits.values())
    if bad:
        names = ", ".join(f"{p} ({r})" for p, r in bad[:SHOW]) + (", ..." if len(bad) > SHOW else "")
        text = f"{len(bad)} of {total} image files under {where} are unreadable: {names}"
        if len(bad) > max_bad_fraction * total:
            raise ValueError(f"data.max_bad_fraction={max_bad_fraction} is exceeded: {text}; fix or remove them, "
                             f"or raise data.max_bad_fraction")
        warnings.warn(text + "; they are skipped", stacklevel=2)
    keep = {split: [i for i, r in enumerate(results[split]) if not isinstance(r, str)] for split in splits}
    for split, kept in keep.items():
        if not kept:
            raise ValueError(f"data.path={where!r}: the {split} split holds no readable images")
    first_train = results[next(iter(splits))][keep[next(iter(splits))][0]]
    return keep, first_train

