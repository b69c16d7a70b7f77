"""The two Dataset kinds (uint8 tensors in memory, image files decoded per item) and held-out splits."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from glow.data.images import CorruptImageError, fit_size, read_image

class ImageTensorDataset(TensorDataset):
    """uint8 images ``[N, C, H, W]`` and labels ``[N]`` or ``[N, K]``, with optional random h-flips."""

    def __init__(self, images: Tensor, labels: Tensor, flip: bool = False):
        super().__init__(images, labels)
        self.flip = flip

    @property
    def labels(self) -> Tensor:
        return self.tensors[1]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x, y = self.tensors[0][index], self.tensors[1][index]
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, y

    def subset(self, indices: Tensor, flip: bool | None = None) -> ImageTensorDataset:
        return ImageTensorDataset(self.tensors[0][indices], self.tensors[1][indices],
                                  self.flip if flip is None else flip)


class ImageFileDataset(Dataset):
    """Image files decoded with PIL per item, brought to one size, with optional random h-flips."""

    def __init__(self, paths: Sequence[str], labels: Tensor, mode: str, native_hw: tuple[int, int],
                 size: int | None, resize: str, flip: bool = False):
        self.paths, self.labels = list(paths), labels
        self.mode, self.native_hw = mode, native_hw
        self.size, self.resize, self.flip = size, resize, flip

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path = self.paths[index]
        try:
            x = read_image(path, self.mode)
        except CorruptImageError as err:  # passed the header probe, broken further in: skip it, say so
            warnings.warn(f"{err}; skipped", stacklevel=2)
            return None
        if self.size is None and tuple(x.shape[-2:]) != self.native_hw:
            # Without a target size a batch needs every image at the first one's size.
            raise ValueError(f"image {path} is {x.shape[-2]}x{x.shape[-1]} but the data set's are "
                             f"{self.native_hw[0]}x{self.native_hw[1]}: set data.image_size")
        try:
            x = fit_size(x, self.size, self.resize)
        except ValueError as err:
            raise ValueError(f"image {path}: {err} (data.resize={self.resize!r})") from None
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, self.labels[index]

    def subset(self, indices: Tensor, flip: bool | None = None) -> ImageFileDataset:
        idx = indices.tolist()
        return ImageFileDataset([self.paths[i] for i in idx], self.labels[indices], self.mode,
                                self.native_hw, self.size, self.resize,
                                self.flip if flip is None else flip)


def held_out_count(n: int, fraction: float) -> int:
    """How many of n items ``split_indices`` holds out: round(fraction * n), at least one held and one kept."""
    n_held = round(fraction * n)
    return min(max(n_held, 1), n - 1) if fraction > 0 and n >= 2 else n_held


def split_indices(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Hold out ``held_out_count(n, fraction)`` of ``range(n)``, chosen by ``seed``: (kept, held_out), sorted."""
    n_held = held_out_count(n, fraction)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_held:].sort().values, perm[:n_held].sort().values


def load_digits_images(size: int = 28) -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled digits (1797 images, 8x8, gray 0..16) as uint8 ``[N, 1, size, size]``.

    Gray levels are scaled to 0..255 and upsampled bilinearly so they stand in for MNIST.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("the digits data set needs scikit-learn: pip install scikit-learn") from err
    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().unsqueeze(1) * (255.0 / 16.0)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8), torch.from_numpy(bunch.target).long()

