"""Image folders: ``<path>/{train,test}/<class>/<image>`` or ``<path>/<class>/<image>``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from glow.data.images import screen

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp",
                              ".tif", ".tiff", ".ppm", ".pgm"})


@dataclass
class FolderIndex:
    """The files of an image folder: class folders sorted by name give labels 0..K-1."""

    class_names: list[str]
    train: tuple[list[str], list[int]]
    test: tuple[list[str], list[int]] | None  # None: hold test_fraction out of train
    first_hw: tuple[int, int] = (0, 0)  # (H, W) of the first readable training image


def screen_folder(index: FolderIndex, max_bad_fraction: float, where: str) -> FolderIndex:
    """Probe every file of both splits (glow.data.images.screen); keep the readable ones."""
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

