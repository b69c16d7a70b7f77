"""torchvision data sets: downloads with a timeout, in-memory splits as uint8 tensors, and the one-line errors for a
data set that is missing (with the layout it needs) or damaged (naming the file)."""

from __future__ import annotations

import contextlib
import math
import os
import socket
import struct

import torch
from torch import Tensor

from glow.data.registry import SPECS
from glow.errors import ConfigError


@contextlib.contextmanager
def network_timeout(seconds: float):
    """Bound every socket operation: torchvision's downloads set no timeout, so on a network that
    drops packets (instead of refusing) they would hang rather than fail."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if previous is None else previous)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def one_line(err: BaseException, limit: int = 200) -> str:
    """An exception as one short line (torchvision's download errors span several)."""
    text = " ".join(str(err).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}"



def torchvision_dataset(name: str, root: str, train: bool, download: bool):
    """The torchvision data set ``name`` (one split) stored under ``root``."""
    import torchvision.datasets as tvd

    if name == "mnist":
        return tvd.MNIST(root, train=train, download=download)
    if name == "fashion_mnist":
        return tvd.FashionMNIST(root, train=train, download=download)
    if name == "cifar10":
        return tvd.CIFAR10(root, train=train, download=download)
    if name == "svhn":  # SVHN keeps its .mat files directly in root: give it a folder
        return tvd.SVHN(os.path.join(root, "svhn"), split="train" if train else "test", download=download)
    if name == "celeba":
        return tvd.CelebA(root, split="train" if train else "test", target_type="attr", download=download)
    raise AssertionError(name)


def torchvision_tensors(name: str, root: str, train: bool) -> tuple[Tensor, Tensor]:
    """One split of an in-memory torchvision data set as uint8 [N, C, H, W] and labels [N]."""
    ds = torchvision_dataset(name, root, train, download=False)  # looked up at call time: tests fake it
    if name in ("mnist", "fashion_mnist"):
        return ds.data.unsqueeze(1), ds.targets.long()
    if name == "cifar10":  # numpy [N, H, W, C]
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)
    return torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long()  # svhn: [N, C, H, W]


# ----------------------------------------------------------------------------- missing or damaged


class DataUnavailableError(ConfigError, FileNotFoundError):
    """A data set that is not where it should be, or whose files are damaged: one line naming the files,
    the layout expected and the way to fix it. A config error (exit 2) and a FileNotFoundError alike."""


def missing_files(name: str, root: str) -> list[str]:
    """The files of SPECS[name].files that are not under ``root``."""
    return [f for f in SPECS[name].files if not os.path.exists(os.path.join(root, f))]


def layout(name: str, root: str) -> str:
    """Where the data set's files go, e.g. ``<root>/MNIST/raw/{train-images-idx3-ubyte, ...}``."""
    files = SPECS[name].files
    folder = os.path.dirname(files[0]) if all(os.path.dirname(f) == os.path.dirname(files[0]) for f in files) \
        else files[0].split("/")[0]
    rest = [os.path.relpath(f, folder) for f in files]
    return os.path.join(root, folder, "{" + ", ".join(rest) + "}")


def missing_message(name: str, root: str, why: str) -> str:
    """The one line for a missing data set: where it was looked for, the layout expected, how to get it."""
    hint = ", or data.fallback=true for the scikit-learn digits stand-in" if name == "mnist" else ""
    return (f"data={name} is not allowed: {name} not found under {root}{why}: expected {layout(name, root)} "
            f"({len(missing_files(name, root))} missing); download it with data.download=true, or point data.root "
            f"(or GLOW_DATA_DIR) at a copy{hint}")


def idx_problem(path: str) -> str | None:
    """Why an MNIST-format (idx) file is damaged, from its header and length, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] != 0x08 or not 1 <= head[3] <= 4:
                return "its header is not an idx header"
            dims = struct.unpack(f">{head[3]}I", f.read(4 * head[3]))
        expected = 4 + 4 * len(dims) + math.prod(dims)
        size = os.path.getsize(path)
    except (OSError, struct.error) as err:
        return one_line(err)
    return None if size == expected else f"{size} bytes where its header promises {expected} (truncated?)"


def check_headers(name: str, root: str) -> None:
    """A damaged file that its header and length already show (MNIST's idx files, a truncated download) is
    named before any work; other formats are checked when loaded (``damaged``)."""
    if name not in ("mnist", "fashion_mnist"):
        return
    for path in (os.path.join(root, f) for f in SPECS[name].files):
        why = idx_problem(path) if os.path.exists(path) else None  # a missing file is missing_files' to name
        if why is not None:
            raise DataUnavailableError(f"data={name} is not allowed: {path} is corrupt ({why}): delete it and "
                                       f"download it again with data.download=true, or copy a good one")


def damaged(name: str, root: str, err: BaseException) -> DataUnavailableError:
    """The one line for a data set whose files are all there but do not load: the damaged file when the
    format says which (MNIST's idx files), else every file of the set."""
    try:
        check_headers(name, root)
    except DataUnavailableError as named:
        return named
    return DataUnavailableError(f"data={name} is not allowed: its files under {root} do not load ({one_line(err)}): "
                                f"one of {layout(name, root)} is corrupt; delete them and download again with "
                                f"data.download=true")


def load_tensors(name: str, root: str, train: bool) -> tuple[Tensor, Tensor]:
    """torchvision_tensors, with a damaged file named (never taken for a missing one)."""
    try:
        return torchvision_tensors(name, root, train)
    # torchvision raises RuntimeError (a truncated idx file), pickle and zlib errors, OSError...: all "damaged"
    except Exception as err:
        raise damaged(name, root, err) from err
