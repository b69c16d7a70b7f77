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

Layout: ``registry`` (what each data set is), ``images`` (decode, resize, probe), ``folder``
(image-folder scanning), ``datasets`` (the Dataset classes and splits), ``samplers`` (sharding),
``sources`` (torchvision downloads and tensors), ``checks`` (argument validation) and
``datamodule`` (the LightningDataModule that ties them together).
"""

from glow.data.datamodule import ImageDataModule
from glow.data.datasets import ImageFileDataset, ImageTensorDataset, load_digits_images, split_indices
from glow.data.folder import FolderIndex, scan_image_folder, screen_folder
from glow.data.images import CorruptImageError, collate_readable, fit_size, read_image, to_channels
from glow.data.registry import (CELEBA_ATTRIBUTES, NAMES, RESIZE_MODES, SPECS, TARGETS,
                                DatasetSpec, default_data_dir, default_num_workers)
from glow.data.samplers import ResumableSampler, ShardSampler

__all__ = [
    "CELEBA_ATTRIBUTES", "NAMES", "RESIZE_MODES", "SPECS", "TARGETS", "CorruptImageError",
    "DatasetSpec", "FolderIndex", "ImageDataModule", "ImageFileDataset", "ImageTensorDataset",
    "ResumableSampler", "ShardSampler", "collate_readable", "default_data_dir", "default_num_workers",
    "fit_size", "load_digits_images", "read_image", "scan_image_folder", "screen_folder",
    "split_indices", "to_channels",
]
