"""What is known about each data set before any image is loaded: ONE table (``SPECS``) of names, shapes,
classes and how each is stored; the data-set root and worker counts.

Adding a torchvision data set: a row here, its loading in glow/data/sources.py, and a
conf/data/<name>.yaml with ``_target_: glow.data.ImageDataModule``. Any folder of images needs
none of these: ``data=imagefolder data.path=<folder>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RESIZE_MODES = ("pad", "resize", "center_crop")
TARGETS = ("class", "attr")
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
    in_memory: bool = True  # held as one uint8 tensor (no loader workers), else decoded file by file
    files: tuple[str, ...] = ()  # what must be under the data root (torchvision's layout); () = nothing to find
    train_size: int | None = None  # images of the training split (before any hold-out), where known


_DIGITS = tuple(str(i) for i in range(10))


def _idx_files(folder: str) -> tuple[str, ...]:
    return tuple(f"{folder}/raw/{split}-{kind}-idx{dims}-ubyte" for split in ("train", "t10k")
                 for kind, dims in (("images", 3), ("labels", 1)))


SPECS = {
    "mnist": DatasetSpec((1, 28, 28), _DIGITS, files=_idx_files("MNIST"), train_size=60000),
    "digits": DatasetSpec((1, 28, 28), _DIGITS, train_size=1797),  # upsampled from 8x8 to stand in for MNIST; scikit-learn's own
    "fashion_mnist": DatasetSpec((1, 28, 28), (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"), files=_idx_files("FashionMNIST"), train_size=60000),
    "cifar10": DatasetSpec((3, 32, 32), (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck"),
        files=tuple(f"cifar-10-batches-py/{f}" for f in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                                                         "batches.meta")), train_size=50000),
    "svhn": DatasetSpec((3, 32, 32), _DIGITS, files=("svhn/train_32x32.mat", "svhn/test_32x32.mat"), train_size=73257),
    # CelebA has no classes: with target="class" every label is 0 (an unconditional data set).
    "celeba": DatasetSpec((3, 218, 178), ("face",), CELEBA_ATTRIBUTES, in_memory=False,
                          files=("celeba/img_align_celeba", "celeba/list_attr_celeba.txt",
                                 "celeba/list_eval_partition.txt", "celeba/identity_CelebA.txt",
                                 "celeba/list_bbox_celeba.txt", "celeba/list_landmarks_align_celeba.txt"),
                          train_size=162770),
}
NAMES = (*SPECS, "imagefolder")  # imagefolder: any folder of class folders, scanned (glow.data.folder)


def default_data_dir() -> str:
    """The data-set root: ``$GLOW_DATA_DIR`` if set, else the repository's ``data/`` folder.

    Absolute, so that every working directory (a Hydra run folder, a test's tmp dir) finds the
    same data.
    """
    env = os.environ.get("GLOW_DATA_DIR")
    if env:
        return str(Path(env).expanduser().resolve())
    return str(Path(__file__).resolve().parents[2] / "data")


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

