"""torchvision data sets: downloads with a timeout, and in-memory splits as uint8 tensors."""

from __future__ import annotations

import contextlib
import os
import socket

import torch
from torch import Tensor


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
