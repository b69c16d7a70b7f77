"""The LightningDataModule: train/val/test loaders of raw uint8 images; see ``glow.data``."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from glow.data.checks import check_arguments, check_batch_fits, check_classes, check_size, not_allowed
from glow.data.datasets import ImageFileDataset, ImageTensorDataset, load_digits_images, split_indices
from glow.data.folder import FolderIndex, scan_image_folder, screen_folder
from glow.data.images import collate_readable, fit_in_chunks, to_channels
from glow.data.registry import DOWNLOAD_TIMEOUT_S, SPECS, DatasetSpec, default_data_dir, default_num_workers
from glow.data.samplers import ResumableSampler, ShardSampler
from glow.data import sources
from glow.data.sources import DataUnavailableError, network_timeout, one_line


class ImageDataModule(L.LightningDataModule):
    """Train/val/test loaders of raw uint8 images for one data set; see the module docstring.

    Args:
        name: mnist | fashion_mnist | cifar10 | svhn | celeba | imagefolder | digits.
        root: data-set root; None -> ``default_data_dir()``. torchvision layouts below it (SPECS' files).
        path: imagefolder only: ``<path>/{train,test}/<class>/<image>`` or ``<path>/<class>/<image>``
            (then ``test_fraction`` is held out). A relative path is taken relative to ``root``.
        batch_size / eval_batch_size: train / val+test batch size per process (eval defaults to train).
        image_size / resize: square output size (None = native), reached by pad | resize | center_crop (fit_size).
        val_fraction / test_fraction: held out of the (filtered, limited) training split for validation / for
            testing where there is no test split (imagefolder, digits).
        classes: keep only these labels; labels keep their values (``num_classes`` is unchanged).
        limit_train / limit_test: keep the first N images (after the class filter, before validation).
        target: class | attr (CelebA's 40 binary attributes as a long ``[B, 40]``).
        download: let ``prepare_data()`` download a missing torchvision data set (else a missing one
            stops the constructor with the layout expected).
        fallback: mnist only: if MNIST is missing and cannot be downloaded, warn and use scikit-learn's
            digits (``self.source``: "digits"). A damaged MNIST file is named, never replaced.
        num_workers: DataLoader workers; None -> 0 for in-memory data sets (an item is a tensor index,
            cheaper than shipping it to another process), ``default_num_workers()`` for image files.
        seed: chooses the held-out splits and the training order. random_flip: h-flips, train split only.
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
        check_arguments(name, path, batch_size, eval_batch_size, image_size, resize, val_fraction,
                        test_fraction, limit_train, limit_test, target, num_workers, seed, channels,
                        max_bad_fraction)
        self.channels, self.max_bad_fraction = channels, float(max_bad_fraction)
        self.name, self.resize, self.target = name, resize, target
        self.root = str(Path(root).expanduser().resolve()) if root is not None else default_data_dir()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size if eval_batch_size is not None else batch_size
        self.image_size, self.random_flip = image_size, random_flip
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.limit_train, self.limit_test = limit_train, limit_test
        self.download, self.fallback, self.seed = download, fallback, seed
        if num_workers is None:
            num_workers = 0 if name in SPECS and SPECS[name].in_memory else default_num_workers()
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
                self._spec = dataclasses.replace(self._spec, shape=(channels, *self._spec.shape[1:]))
                self._file_mode = "L" if channels == 1 else "RGB"
        self.classes = check_classes(classes, target, self.num_classes)
        if name != "imagefolder":  # a folder's every image is checked by its screening
            check_size(name, self._spec.shape, image_size, resize)
        self.source = name  # what setup() actually loaded: "digits" after an MNIST fallback
        self._download_error: str | None = None
        self._download_tried = False
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        if not download and self._missing() and not self._falls_back():  # before any work: one line, the layout
            raise DataUnavailableError(self._missing_message())
        sources.check_headers(name, self.root)  # a file its header shows damaged is named now, before any work

    def check_batch_fits(self) -> None:
        """For training (train.py calls it before any work): a batch larger than every training image there can be
        is one line; the exact count is checked again by train_dataloader (sample.py needs no training batch)."""
        labels = self._folder.train[1] if self._folder is not None else None
        check_batch_fits(self.batch_size, self._spec.train_size if labels is None else
                         sum(1 for y in labels if self.classes is None or y in self.classes),
                         self.limit_train, self.val_fraction)

    def _scan_folder(self) -> DatasetSpec:
        if not Path(self.path).is_dir():
            raise not_allowed("path", self.path, "use an existing folder of class folders")
        self._folder = screen_folder(scan_image_folder(Path(self.path)), self.max_bad_fraction, self.path,
                                     self.image_size, self.resize)
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
        if not self.download or not self._missing():  # present: a damaged file is named by setup(), never re-fetched
            return
        self._download_tried = True
        try:
            with network_timeout(DOWNLOAD_TIMEOUT_S):
                for train in (True, False):
                    sources.torchvision_dataset(self.name, self.root, train, download=True)
        # urllib, HTTP, checksum and extraction errors all mean "not available": catch them all.
        except Exception as err:
            self._download_error = one_line(err)
            if not self._falls_back():
                raise DataUnavailableError(self._missing_message()) from None

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
            raise not_allowed("batch_size", self.batch_size,
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
        if self._missing():  # only a MISSING MNIST falls back: a damaged one is named (sources.load_tensors)
            if self._falls_back():
                warnings.warn(f"MNIST not found under {self.root}{self._why_missing()}; falling back to "
                              f"scikit-learn's 8x8 digits upsampled to 28x28 (1797 images): "
                              f"results are not comparable to MNIST", stacklevel=2)
                return self._digits_splits()
            raise DataUnavailableError(self._missing_message())
        splits = [sources.load_tensors(self.name, self.root, train) for train in (True, False)]
        return tuple(ImageTensorDataset(fit_in_chunks(to_channels(x, self.channels), self.image_size, self.resize), y)
                     for x, y in splits)

    def _why_missing(self) -> str:
        if self._download_error is not None:
            return f" and the download failed ({self._download_error})"
        untried = "" if self._download_tried else " (download=True, but prepare_data() did not run in this process)"
        return untried if self.download else " (download=False)"

    def _missing(self) -> list[str]:
        """The data set's files (SPECS[name].files) missing under root; none for digits and image folders."""
        return sources.missing_files(self.name, self.root) if self.name in SPECS else []

    def _falls_back(self) -> bool:
        return self.name == "mnist" and self.fallback

    def _missing_message(self) -> str:
        return sources.missing_message(self.name, self.root, self._why_missing())

    def _digits_splits(self) -> tuple[Dataset, Dataset]:
        self.source = "digits"
        x, y = load_digits_images(SPECS["digits"].shape[-1])
        x = to_channels(x, self.channels)
        all_digits = ImageTensorDataset(fit_in_chunks(x, self.image_size, self.resize), y)
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
            if self._missing():
                raise DataUnavailableError(self._missing_message())
            try:
                ds = sources.torchvision_dataset(self.name, self.root, train, download=False)
            except Exception as err:  # present but not loadable: a damaged list or a missing image
                raise sources.damaged(self.name, self.root, err) from err
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
