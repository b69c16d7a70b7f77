"""Data modules that yield RAW uint8 images ``(x [B, C, H, W] uint8, y long)``.

Turning pixels into model inputs (bit reduction, dequantisation) happens in
``glow.quantize.preprocess`` and nowhere else, so everything here stays in integer pixel space:
resizing, padding and flipping all produce uint8.

Two kinds of data set:

* in memory (mnist, fashion_mnist, cifar10, svhn, digits): decoded once into a uint8
  ``TensorDataset``; resizing is done once for the whole split, so an item is a tensor index.
* image files (celeba, imagefolder): decoded with PIL per item; an unreadable file raises an
  error that names it.

Splits: validation is held out of the training split (``val_fraction``, chosen by ``seed``);
test is the official test split (or, for image folders without ``test/`` and for ``digits``,
``test_fraction`` held out by ``seed``).

Distributed: the Trainer is built with ``use_distributed_sampler=False`` and this module shards
itself. Train uses ``ResumableSampler`` (a shuffled, ``drop_last`` DistributedSampler whose
position is the global step, so resuming is exact; it assumes whole epochs, i.e. no
``limit_train_batches``). Val/test use
``ShardSampler``: indices ``rank::world_size``, unpadded, so summing over ranks counts every
image exactly once (a ``DistributedSampler`` would repeat images to even out the shards).
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Iterator, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset
from torch.utils.data.distributed import DistributedSampler
from torchvision.transforms.v2 import functional as TF

from glow.probe import screen

NAMES = ("mnist", "fashion_mnist", "cifar10", "svhn", "celeba", "imagefolder", "digits")
RESIZE_MODES = ("pad", "resize", "center_crop")
TARGETS = ("class", "attr")
IN_MEMORY = frozenset({"mnist", "fashion_mnist", "cifar10", "svhn", "digits"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp",
                              ".tif", ".tiff", ".ppm", ".pgm"})
DOWNLOAD_TIMEOUT_S = 30.0

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)


@dataclass(frozen=True)
class DatasetSpec:
    """What is known about a data set before any image is loaded."""

    shape: tuple[int, int, int]  # native (C, H, W)
    class_names: tuple[str, ...]
    attribute_names: tuple[str, ...] | None = None


_DIGITS = tuple(str(i) for i in range(10))
SPECS = {
    "mnist": DatasetSpec((1, 28, 28), _DIGITS),
    "digits": DatasetSpec((1, 28, 28), _DIGITS),  # upsampled from 8x8 to stand in for MNIST
    "fashion_mnist": DatasetSpec((1, 28, 28), (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "cifar10": DatasetSpec((3, 32, 32), (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck")),
    "svhn": DatasetSpec((3, 32, 32), _DIGITS),
    # CelebA has no classes: with target="class" every label is 0 (an unconditional data set).
    "celeba": DatasetSpec((3, 218, 178), ("face",), CELEBA_ATTRIBUTES),
}


def default_data_dir() -> str:
    """The data-set root: ``$GLOW_DATA_DIR`` if set, else the repository's ``data/`` folder.

    Absolute, so that every working directory (a Hydra run folder, a test's tmp dir) finds the
    same data.
    """
    env = os.environ.get("GLOW_DATA_DIR")
    if env:
        return str(Path(env).expanduser().resolve())
    return str(Path(__file__).resolve().parents[1] / "data")


def default_num_workers() -> int:
    """DataLoader worker processes for data sets decoded from files.

    One core stays with the main process, which runs the training step (on a CPU-only box,
    the model itself); the others decode images. On a 2-core box that is one worker: decoding
    overlaps the step without two processes fighting over one core. Capped at 4 because small
    images (32..64 px) decode fast; more workers add start-up time and memory, not speed.
    """
    try:
        cores = len(os.sched_getaffinity(0))  # honours taskset/container pinning, unlike cpu_count
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(0, min(4, cores - 1))


# ----------------------------------------------------------------------------- pixels


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


def _fit_in_chunks(images: Tensor, size: int | None, mode: str, chunk: int = 4096) -> Tensor:
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


# ----------------------------------------------------------------------------- data sets


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


def split_indices(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Hold out ``round(fraction * n)`` of ``range(n)``, chosen by ``seed``: (kept, held_out), sorted.

    A positive fraction holds out at least one item and keeps at least one (when n >= 2).
    """
    n_held = round(fraction * n)
    if fraction > 0 and n >= 2:
        n_held = min(max(n_held, 1), n - 1)
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


@dataclass
class FolderIndex:
    """The files of an image folder: class folders sorted by name give labels 0..K-1."""

    class_names: list[str]
    train: tuple[list[str], list[int]]
    test: tuple[list[str], list[int]] | None  # None: hold test_fraction out of train
    first_hw: tuple[int, int] = (0, 0)  # (H, W) of the first readable training image


def screen_folder(index: FolderIndex, max_bad_fraction: float, where: str) -> FolderIndex:
    """Probe every file of both splits (glow.probe.screen); keep the readable ones."""
    splits = {"train": index.train[0]}
    if index.test is not None:
        splits["test"] = index.test[0]
    keep, first_hw = screen(splits, max_bad_fraction, where)

    def kept(split):
        paths, labels = split
        return [paths[i] for i in keep_ids], [labels[i] for i in keep_ids]

    keep_ids = keep["train"]
    train = kept(index.train)
    test = None
    if index.test is not None:
        keep_ids = keep["test"]
        test = kept(index.test)
    return FolderIndex(index.class_names, train, test, first_hw)


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


def _scan_class_folders(folder: Path, class_names: list[str] | None = None
                        ) -> tuple[list[str], list[int], list[str]]:
    """(paths, labels, class_names) of ``folder/<class>/<image>``, in sorted, reproducible order.

    With ``class_names`` given (a test split), labels follow them and unknown classes are errors.
    """
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if class_names is None:
        class_names = found
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise ValueError(f"data.path: {folder} has class folders {unknown} missing from train/")
    paths, labels = [], []
    for name in found:
        files = sorted(f for f in (folder / name).iterdir()
                       if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
        paths += [str(f) for f in files]
        labels += [class_names.index(name)] * len(files)
    return paths, labels, class_names


def scan_image_folder(path: Path) -> FolderIndex:
    """Index ``path/{train,test}/<class>/<image>`` or ``path/<class>/<image>``."""
    train_dir = path / "train"
    if train_dir.is_dir():
        paths, labels, names = _scan_class_folders(train_dir)
        test_dir = path / "test"
        test = _scan_class_folders(test_dir, names)[:2] if test_dir.is_dir() else None
    else:
        paths, labels, names = _scan_class_folders(path)
        test = None
    if not paths:
        raise ValueError(f"data.path={str(path)!r} holds no images: expected <path>/<class>/<image> "
                         f"or <path>/train/<class>/<image> (+ test/)")
    return FolderIndex(names, (paths, labels), test)


# ----------------------------------------------------------------------------- sampling


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of a data set, in order and unpadded.

    Every index lands on exactly one rank, so a metric summed over ranks counts each image once.
    (``DistributedSampler`` pads the shards to equal length by repeating images.) Shards may
    differ in length by one batch, so reduce sums and counts at epoch end, not per step.
    """

    def __init__(self, data_source: Sized, rank: int, world_size: int):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is not allowed for world_size={world_size}: "
                             f"use 0 <= rank < world_size")
        self.num_items, self.rank, self.world_size = len(data_source), rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_items, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_items, self.world_size))


class ResumableSampler(DistributedSampler):
    """Shuffled, drop-last shards (as DistributedSampler) whose position is the global step.

    Every data epoch has exactly ``batches_per_epoch`` steps, so step ``s`` is batch
    ``s % batches_per_epoch`` of data epoch ``s // batches_per_epoch`` (shuffled by seed + epoch).
    Each ``iter()`` yields the rest of the current data epoch and moves on, so a run resumed at any
    step (``start_at``) sees exactly the batches an uninterrupted run would. Lightning's own epoch
    counter is not used (``set_epoch`` is a no-op): after a restore it can be off by one.
    """

    def __init__(self, dataset: Sized, world_size: int, rank: int, seed: int, batch_size: int):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.next_step = 0

    @property
    def batches_per_epoch(self) -> int:
        return max(1, self.num_samples // self.batch_size)

    def start_at(self, global_step: int) -> None:
        self.next_step = global_step

    def set_epoch(self, epoch: int) -> None:  # the position comes from next_step instead
        pass

    def __iter__(self) -> Iterator[int]:
        data_epoch, skip = divmod(self.next_step, self.batches_per_epoch)
        self.epoch = data_epoch
        indices = list(super().__iter__())[skip * self.batch_size: self.batches_per_epoch * self.batch_size]
        self.next_step = (data_epoch + 1) * self.batches_per_epoch
        return iter(indices)


@contextlib.contextmanager
def _network_timeout(seconds: float):
    """Bound every socket operation: torchvision's downloads set no timeout, so on a network that
    drops packets (instead of refusing) they would hang rather than fail."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if previous is None else previous)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _one_line(err: BaseException, limit: int = 200) -> str:
    """An exception as one short line (torchvision's download errors span several)."""
    text = " ".join(str(err).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}"


# ----------------------------------------------------------------------------- module


def _not_allowed(arg: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"data.{arg}={value!r} is not allowed: {allowed}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_optional_positive(arg: str, value: object) -> None:
    if value is not None and not (_is_int(value) and value > 0):
        raise _not_allowed(arg, value, "use a positive integer or null")


class ImageDataModule(L.LightningDataModule):
    """Train/val/test loaders of raw uint8 images for one data set; see the module docstring.

    Args:
        name: mnist | fashion_mnist | cifar10 | svhn | celeba | imagefolder | digits.
        root: data-set root; None -> ``default_data_dir()``. torchvision layouts below it
            (``MNIST/raw``, ``FashionMNIST/raw``, ``cifar-10-batches-py``, ``svhn/``, ``celeba/``).
        path: imagefolder only: ``<path>/{train,test}/<class>/<image>`` or ``<path>/<class>/<image>``
            (then ``test_fraction`` is held out). A relative path is taken relative to ``root``.
        batch_size / eval_batch_size: train / val+test batch size per process (eval defaults to train).
        image_size: square output size; None = native size.
        resize: how to reach image_size: pad | resize | center_crop (see ``fit_size``).
        random_flip: random horizontal flips, train split only.
        val_fraction: share of the (filtered, limited) training split held out for validation.
        test_fraction: held-out test share where there is no test split (imagefolder, digits).
        classes: keep only these labels; labels keep their values (``num_classes`` is unchanged).
        limit_train / limit_test: keep the first N images (after the class filter, before the
            validation split).
        target: class | attr (CelebA's 40 binary attributes as a long ``[B, 40]``).
        download: let ``prepare_data()`` download a missing torchvision data set.
        fallback: mnist only: if MNIST can be neither found nor downloaded, warn and use
            scikit-learn's digits instead (``self.source`` then says "digits").
        num_workers: DataLoader workers; None -> 0 for in-memory data sets (an item is a tensor
            index, cheaper than shipping it from another process), ``default_num_workers()``
            for data sets decoded from files.
        seed: chooses the held-out splits and the training order.
    """

    def __init__(self, name: str, root: str | None = None, path: str | None = None,
                 batch_size: int = 64, eval_batch_size: int | None = None,
                 image_size: int | None = None, resize: str = "pad", random_flip: bool = False,
                 val_fraction: float = 0.05, test_fraction: float = 0.1,
                 classes: Sequence[int] | None = None,
                 limit_train: int | None = None, limit_test: int | None = None,
                 target: str = "class", download: bool = True, fallback: bool = True,
                 num_workers: int | None = None, seed: int = 0, channels: int | None = None,
                 max_bad_fraction: float = 0.01):
        super().__init__()
        if channels not in (None, 1, 3):
            raise _not_allowed("channels", channels, "use 1 (grey), 3 (RGB) or null (the data set's own)")
        if isinstance(max_bad_fraction, bool) or not isinstance(max_bad_fraction, (int, float)) \
                or not 0 <= max_bad_fraction <= 1:
            raise _not_allowed("max_bad_fraction", max_bad_fraction, "use a number in [0, 1]")
        self.channels, self.max_bad_fraction = channels, float(max_bad_fraction)
        self._check_arguments(name, path, batch_size, eval_batch_size, image_size, resize,
                              val_fraction, test_fraction, limit_train, limit_test, target,
                              num_workers, seed)
        self.name, self.resize, self.target = name, resize, target
        self.root = str(Path(root).expanduser().resolve()) if root is not None else default_data_dir()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size if eval_batch_size is not None else batch_size
        self.image_size, self.random_flip = image_size, random_flip
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.limit_train, self.limit_test = limit_train, limit_test
        self.download, self.fallback, self.seed = download, fallback, seed
        if num_workers is None:
            num_workers = 0 if name in IN_MEMORY else default_num_workers()
        self.num_workers = num_workers

        self.path: str | None = None
        self._folder: FolderIndex | None = None
        self._file_mode = "RGB"
        if name == "imagefolder":
            self.path = str(Path(self.root, path).resolve())  # absolute paths stay as they are
            self._spec = self._scan_folder()
        else:
            self._spec = SPECS[name]
            if channels is not None:  # in-memory sets are converted in _load_splits; files as decoded
                self._spec = DatasetSpec((channels, *self._spec.shape[1:]), self._spec.class_names,
                                         self._spec.attribute_names)
                self._file_mode = "L" if channels == 1 else "RGB"
        self.classes = self._check_classes(classes)
        self._check_size()

        self.source = name  # what setup() actually loaded: "digits" after an MNIST fallback
        self._download_error: str | None = None
        self._download_tried = False
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # -- argument checks ---------------------------------------------------------------

    @staticmethod
    def _check_arguments(name, path, batch_size, eval_batch_size, image_size, resize,
                         val_fraction, test_fraction, limit_train, limit_test, target,
                         num_workers, seed) -> None:
        """One-line ValueErrors for arguments that are wrong whatever the data."""
        if name not in NAMES:
            raise _not_allowed("name", name, "use one of " + ", ".join(NAMES))
        if resize not in RESIZE_MODES:
            raise _not_allowed("resize", resize, "use one of " + ", ".join(RESIZE_MODES))
        if target not in TARGETS:
            raise _not_allowed("target", target, "use one of " + ", ".join(TARGETS))
        if target == "attr" and name != "celeba":
            raise _not_allowed("target", target, f"only celeba has attributes; use 'class' for {name}")
        if name == "imagefolder" and path is None:
            raise _not_allowed("path", path, "data.name=imagefolder needs the folder of images")
        if name != "imagefolder" and path is not None:
            raise _not_allowed("path", path, f"only imagefolder reads a path; use null for {name}")
        if not (_is_int(batch_size) and batch_size > 0):
            raise _not_allowed("batch_size", batch_size, "use a positive integer")
        for arg, value in (("eval_batch_size", eval_batch_size), ("image_size", image_size),
                           ("limit_train", limit_train), ("limit_test", limit_test)):
            _check_optional_positive(arg, value)
        if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
            raise _not_allowed("val_fraction", val_fraction, "use a number in [0, 1)")
        if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
            raise _not_allowed("test_fraction", test_fraction, "use a number in (0, 1)")
        if num_workers is not None and not (_is_int(num_workers) and num_workers >= 0):
            raise _not_allowed("num_workers", num_workers, "use a non-negative integer or null")
        if not _is_int(seed):
            raise _not_allowed("seed", seed, "use an integer")

    def _check_classes(self, classes: Sequence[int] | None) -> list[int] | None:
        if classes is None:
            return None
        if self.target != "class":
            raise _not_allowed("classes", classes, "filtering by class needs data.target='class'")
        kept = list(classes)  # also accepts Hydra's ListConfig
        if not kept or not all(_is_int(c) and 0 <= c < self.num_classes for c in kept):
            raise _not_allowed("classes", classes,
                               f"use a non-empty list of labels in 0..{self.num_classes - 1} or null")
        return kept

    def _check_size(self) -> None:
        """Padding can only grow an image and cropping only shrink it: check against the native size."""
        # An image folder's native shape is its first image's; the others are checked per item.
        if self.image_size is None:
            return
        _, h, w = self._spec.shape
        s = self.image_size
        if (self.resize == "pad" and (h > s or w > s)) or (self.resize == "center_crop" and (h < s or w < s)):
            raise _not_allowed("image_size", s, f"{self.name} is {h}x{w} and data.resize={self.resize!r}; "
                                                f"use data.resize='resize' or another size")

    def _scan_folder(self) -> DatasetSpec:
        if not Path(self.path).is_dir():
            raise _not_allowed("path", self.path, "use an existing folder of class folders")
        self._folder = screen_folder(scan_image_folder(Path(self.path)), self.max_bad_fraction, self.path)
        # The channel count is the config's (default 3), never the first file's: every image is
        # converted to it, so one greyscale (or RGBA, palette) file cannot change the whole data set.
        channels = self.channels or 3
        self._file_mode = "L" if channels == 1 else "RGB"
        h, w = self._folder.first_hw
        return DatasetSpec((channels, h, w), tuple(self._folder.class_names))

    # -- what the model needs to know, before any image is loaded -------------------------

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the loaders yield."""
        c, h, w = self._spec.shape
        return (c, h, w) if self.image_size is None else (c, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int:
        """Size of the label space (unchanged by ``classes``, since labels keep their values)."""
        return len(self._spec.class_names)

    @property
    def class_names(self) -> list[str]:
        return list(self._spec.class_names)

    @property
    def attribute_names(self) -> list[str] | None:
        names = self._spec.attribute_names
        return list(names) if names is not None else None

    # -- Lightning hooks ---------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download the data set if asked (Lightning calls this once per node, before setup)."""
        if not self.download or self.name in ("digits", "imagefolder"):
            return
        self._download_tried = True
        try:
            with _network_timeout(DOWNLOAD_TIMEOUT_S):
                for train in (True, False):
                    self._torchvision_dataset(train, download=True)
        # urllib, HTTP, checksum and extraction errors all mean "not available": catch them all.
        except Exception as err:
            self._download_error = _one_line(err)
            if not (self.name == "mnist" and self.fallback):
                raise RuntimeError(f"could not download {self.name} into {self.root}: "
                                   f"{self._download_error}") from err

    def setup(self, stage: str | None = None) -> None:
        """Build the train/val/test splits (once; later calls are no-ops)."""
        if self.train_set is not None:
            return
        train, test = self._load_splits()
        train, test = self._select(train, self.limit_train), self._select(test, self.limit_test)
        kept, held = split_indices(len(train), self.val_fraction, self.seed)
        self.train_set = train.subset(kept, flip=self.random_flip)
        self.val_set = train.subset(held, flip=False)
        self.test_set = test

    def train_dataloader(self) -> DataLoader:
        dataset = self._require(self.train_set)
        rank, world = self._dist_info()
        if len(dataset) // world < self.batch_size:
            raise _not_allowed("batch_size", self.batch_size,
                               f"each of {world} process(es) needs a full batch but there are "
                               f"{len(dataset)} training images")
        # One sampler for 1..N processes: the order is a pure function of (seed, global step), so a
        # resumed run sees exactly the batches an uninterrupted run would have.
        sampler = ResumableSampler(dataset, world, rank, self.seed, self.batch_size)
        trainer = self._trainer_or_none()
        if trainer is not None:
            sampler.start_at(trainer.global_step)
        return self._loader(dataset, self.batch_size, sampler=sampler, drop_last=True)

    def _trainer_or_none(self):
        try:
            return self.trainer
        except RuntimeError:
            return None

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self._require(self.val_set))

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self._require(self.test_set))

    # -- loading ------------------------------------------------------------------------

    def _load_splits(self) -> tuple[Dataset, Dataset]:
        """The full (train, test) splits, already at the output size for in-memory data."""
        if self.name == "imagefolder":
            return self._folder_splits()
        if self.name == "celeba":
            return self._celeba_splits()
        if self.name == "digits":
            return self._digits_splits()
        try:
            splits = [self._torchvision_tensors(train) for train in (True, False)]
        except (RuntimeError, OSError) as err:  # torchvision: "Dataset not found or corrupted"
            if self.name == "mnist" and self.fallback:
                warnings.warn(f"MNIST not found under {self.root}{self._why_missing()}; falling back to "
                              f"scikit-learn's 8x8 digits upsampled to 28x28 (1797 images): "
                              f"results are not comparable to MNIST", stacklevel=2)
                return self._digits_splits()
            raise FileNotFoundError(self._missing_message()) from err
        return tuple(ImageTensorDataset(_fit_in_chunks(to_channels(x, self.channels), self.image_size, self.resize), y)
                     for x, y in splits)

    def _why_missing(self) -> str:
        if self._download_error is not None:
            return f" and the download failed ({self._download_error})"
        if self.download and not self._download_tried:
            return " (download=True, but prepare_data() did not run in this process)"
        return "" if self.download else " (download=False)"

    def _missing_message(self) -> str:
        hint = " or data.fallback=true for the scikit-learn digits stand-in" if self.name == "mnist" else ""
        return (f"{self.name} not found under {self.root}{self._why_missing()}: point GLOW_DATA_DIR "
                f"or data.root at a copy, or download it with data.download=true{hint}")

    def _torchvision_dataset(self, train: bool, download: bool):
        import torchvision.datasets as tvd

        if self.name == "mnist":
            return tvd.MNIST(self.root, train=train, download=download)
        if self.name == "fashion_mnist":
            return tvd.FashionMNIST(self.root, train=train, download=download)
        if self.name == "cifar10":
            return tvd.CIFAR10(self.root, train=train, download=download)
        if self.name == "svhn":  # SVHN keeps its .mat files directly in root: give it a folder
            return tvd.SVHN(os.path.join(self.root, "svhn"), split="train" if train else "test",
                            download=download)
        if self.name == "celeba":
            return tvd.CelebA(self.root, split="train" if train else "test", target_type="attr",
                              download=download)
        raise AssertionError(self.name)

    def _torchvision_tensors(self, train: bool) -> tuple[Tensor, Tensor]:
        """One split of an in-memory torchvision data set as uint8 [N, C, H, W] and labels [N]."""
        ds = self._torchvision_dataset(train, download=False)
        if self.name in ("mnist", "fashion_mnist"):
            return ds.data.unsqueeze(1), ds.targets.long()
        if self.name == "cifar10":  # numpy [N, H, W, C]
            return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)
        return torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long()  # svhn: [N, C, H, W]

    def _digits_splits(self) -> tuple[Dataset, Dataset]:
        self.source = "digits"
        x, y = load_digits_images(SPECS["digits"].shape[-1])
        x = to_channels(x, self.channels)
        all_digits = ImageTensorDataset(_fit_in_chunks(x, self.image_size, self.resize), y)
        train, test = split_indices(len(all_digits), self.test_fraction, self.seed)
        return all_digits.subset(train), all_digits.subset(test)

    def _files(self, paths: Sequence[str], labels: Tensor, mode: str) -> ImageFileDataset:
        return ImageFileDataset(paths, labels, mode, self._spec.shape[1:], self.image_size, self.resize)

    def _folder_splits(self) -> tuple[Dataset, Dataset]:
        index = self._folder
        train = self._files(index.train[0], torch.tensor(index.train[1], dtype=torch.long), self._file_mode)
        if index.test is not None:
            return train, self._files(index.test[0], torch.tensor(index.test[1], dtype=torch.long),
                                      self._file_mode)
        kept, held = split_indices(len(train), self.test_fraction, self.seed)
        return train.subset(kept), train.subset(held)

    def _celeba_splits(self) -> tuple[Dataset, Dataset]:
        """CelebA's official train/test lists (torchvision parses them); images decoded per item."""
        splits = []
        for train in (True, False):
            try:
                ds = self._torchvision_dataset(train, download=False)
            except (RuntimeError, OSError) as err:
                raise FileNotFoundError(self._missing_message()) from err
            folder = os.path.join(self.root, ds.base_folder, "img_align_celeba")
            labels = ds.attr.long() if self.target == "attr" else torch.zeros(len(ds), dtype=torch.long)
            splits.append(self._files([os.path.join(folder, f) for f in ds.filename], labels, self._file_mode))
        return splits[0], splits[1]

    def _select(self, data: Dataset, limit: int | None) -> Dataset:
        """Keep the ``classes`` asked for, then the first ``limit`` images."""
        if self.classes is not None:
            data = data.subset(torch.isin(data.labels, torch.tensor(self.classes)).nonzero().squeeze(1))
        if limit is not None:
            data = data.subset(torch.arange(min(limit, len(data))))
        return data

    # -- loaders ------------------------------------------------------------------------

    def _dist_info(self) -> tuple[int, int]:
        """(rank, world_size) of the attached Trainer; (0, 1) without one."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _require(self, dataset: Dataset | None) -> Dataset:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        return dataset

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        rank, world = self._dist_info()
        sampler = ShardSampler(dataset, rank, world) if world > 1 else None  # None: sequential
        return self._loader(dataset, self.eval_batch_size, sampler=sampler, drop_last=False)

    def _loader(self, dataset: Dataset, batch_size: int, **kwargs) -> DataLoader:
        if isinstance(dataset, ImageFileDataset):
            kwargs["collate_fn"] = collate_readable
        return DataLoader(dataset, batch_size=batch_size, num_workers=self.num_workers,
                          pin_memory=torch.cuda.is_available(),
                          persistent_workers=self.num_workers > 0, **kwargs)
