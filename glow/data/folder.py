"""Image folders: ``<path>/{train,test}/<class>/<image>`` or ``<path>/<class>/<image>``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from glow.data.screening import SHOW, Size, check_sizes, screen

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp",
                              ".tif", ".tiff", ".ppm", ".pgm"})


@dataclass
class FolderIndex:
    """The files of an image folder: class folders sorted by name give labels 0..K-1."""

    class_names: list[str]
    train: tuple[list[str], list[int]]
    test: tuple[list[str], list[int]] | None  # None: hold test_fraction out of train
    sizes: dict[str, Size] = field(default_factory=dict)  # (H, W) of every screened file

    @property
    def first_hw(self) -> Size:
        """(H, W) of the first readable training image."""
        return self.sizes[self.train[0][0]] if self.sizes else (0, 0)


def screen_folder(index: FolderIndex, max_bad_fraction: float, where: str, image_size: int | None = None,
                  resize: str = "resize") -> FolderIndex:
    """Probe every file of both splits (glow.data.screening); keep the readable ones, and check that every
    one of them can be brought to ``image_size`` the ``resize`` way (one line naming the first that cannot)."""
    splits = {"train": index.train[0]}
    if index.test is not None:
        splits["test"] = index.test[0]
    keep, sizes = screen(splits, max_bad_fraction, where)

    def kept(split, ids):
        paths, labels = split
        return [paths[i] for i in ids], [labels[i] for i in ids]

    train = kept(index.train, keep["train"])
    test = kept(index.test, keep["test"]) if index.test is not None else None
    check_sizes(sizes, image_size, resize)
    return FolderIndex(index.class_names, train, test, sizes)


def _scan_class_folders(folder: Path, class_names: list[str] | None = None
                        ) -> tuple[list[str], list[int], list[str]]:
    """(paths, labels, class_names) of ``folder/<class>/<image>``, in sorted, reproducible order.

    With ``class_names`` given (a test split), labels follow them and unknown classes are errors. Only
    regular files are read: a FIFO, socket or device named like an image would block the reader forever.
    """
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if class_names is None:
        class_names = found
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise ValueError(f"data.path: {folder} has class folders {unknown} missing from train/")
    paths, labels, special = [], [], []
    for name in found:
        named = sorted(f for f in (folder / name).iterdir()
                       if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
        files = [f for f in named if f.is_file()]  # follows links; False for FIFOs, sockets, devices
        special += [f"{name}/{f.name}" for f in named if not f.is_file()]
        paths += [str(f) for f in files]
        labels += [class_names.index(name)] * len(files)
    if special:
        shown = ", ".join(special[:SHOW]) + (", ..." if len(special) > SHOW else "")
        count = f"{len(special)} {'entry' if len(special) == 1 else 'entries'}"
        warnings.warn(f"{count} under {folder} named like images are not regular files (FIFOs, sockets, devices, "
                      f"broken links): {shown}; they are skipped", stacklevel=2)
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
