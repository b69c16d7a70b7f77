"""glow.data: raw uint8 loaders, splits, sharding, the digits fallback and argument checks.

The MNIST and CIFAR-10 tests use the offline copies in the shared data-set folder
($GLOW_SHARED_DATASETS, else ../shared/datasets beside the repository) and skip without them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data.distributed import DistributedSampler

from glow.data import (ImageDataModule, ShardSampler, default_data_dir, default_num_workers,
                       fit_size, load_digits_images)

SHARED = Path(os.environ.get("GLOW_SHARED_DATASETS")
              or Path(__file__).resolve().parents[2] / "shared" / "datasets")


def shared(sub: str) -> Path:
    """A folder of the shared data sets, or skip the test when it is not on this machine."""
    folder = SHARED / sub
    if not folder.is_dir():
        pytest.skip(f"{sub}: {SHARED} absent")
    return folder


def first_batch(loader):
    return next(iter(loader))


# ----------------------------------------------------------------------------- MNIST


@pytest.fixture(scope="module")
def mnist():
    shared("MNIST/raw")
    dm = ImageDataModule("mnist", root=str(SHARED), image_size=32, resize="pad", batch_size=128,
                         download=False, fallback=False, num_workers=0)
    dm.prepare_data()
    dm.setup()
    return dm


def test_mnist_from_shared_copy(mnist):
    import torchvision

    assert mnist.source == "mnist"
    assert mnist.image_shape == (1, 32, 32) and mnist.num_classes == 10
    assert len(mnist.train_set) + len(mnist.val_set) == 60000
    assert len(mnist.val_set) == 3000 and len(mnist.test_set) == 10000

    x, y = first_batch(mnist.train_dataloader())
    assert x.shape == (128, 1, 32, 32) and x.dtype == torch.uint8
    assert y.shape == (128,) and y.dtype == torch.long

    x, y = first_batch(mnist.test_dataloader())  # sequential: the first 128 test images
    raw = torchvision.datasets.MNIST(str(SHARED), train=False, download=False)
    assert torch.equal(x[:, 0, 2:30, 2:30], raw.data[:128])  # 28 -> 32: 2 pixels each side
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert not x[:, 0][:, border].any()
    assert torch.equal(y, raw.targets[:128])
    labels = mnist.test_set.labels
    assert labels.min() == 0 and labels.max() == 9 and len(labels.unique()) == 10


def test_mnist_class_filter_keeps_label_values():
    shared("MNIST/raw")
    dm = ImageDataModule("mnist", root=str(SHARED), classes=[3, 8], download=False,
                         fallback=False, limit_train=2000)
    dm.setup()
    assert dm.num_classes == 10  # the label space, not the number kept
    for split in (dm.train_set, dm.val_set, dm.test_set):
        assert set(split.labels.unique().tolist()) == {3, 8}
    assert len(dm.train_set) + len(dm.val_set) == 2000  # limit counts after the filter
    assert len(dm.test_set) == 1010 + 974  # MNIST's test 3s and 8s
    x, y = first_batch(dm.test_dataloader())
    assert x.shape == (64, 1, 28, 28) and set(y.tolist()) <= {3, 8}


# ----------------------------------------------------------------------------- distributed


def test_shard_sampler_covers_every_index_once():
    data = range(10_001)  # odd, so the shards differ in length
    shards = [list(ShardSampler(data, rank, 2)) for rank in range(2)]
    assert [len(ShardSampler(data, rank, 2)) for rank in range(2)] == [5001, 5000]
    assert set(shards[0]).isdisjoint(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(10_001))
    with pytest.raises(ValueError, match="rank=2"):
        ShardSampler(data, 2, 2)


def test_loaders_shard_themselves_under_a_world_of_two(monkeypatch):
    dm = ImageDataModule("digits", batch_size=16, seed=7)
    dm.setup()
    monkeypatch.setattr(dm, "_dist_info", lambda: (1, 2))
    train = dm.train_dataloader()
    assert isinstance(train.sampler, DistributedSampler)
    assert (train.sampler.rank, train.sampler.num_replicas, train.sampler.seed) == (1, 2, 7)
    assert train.sampler.shuffle and train.sampler.drop_last and train.drop_last
    test = dm.test_dataloader()
    assert isinstance(test.sampler, ShardSampler) and not test.drop_last
    assert len(test.sampler) == len(range(1, len(dm.test_set), 2))


def test_train_sampler_position_is_the_global_step():
    """Each epoch is a fresh shuffle; starting at step k gives exactly the rest of an uninterrupted stream."""
    from glow.data import ResumableSampler

    data = list(range(40))
    straight = ResumableSampler(data, 1, 0, seed=3, batch_size=4)  # 10 batches per epoch
    stream = [i for _ in range(3) for i in straight]
    assert len(stream) == 120 and stream[:40] != stream[40:80] and sorted(stream[:40]) == data
    for step in (0, 7, 10, 23):
        resumed = ResumableSampler(data, 1, 0, seed=3, batch_size=4)
        resumed.start_at(step)
        tail = [i for _ in range(3) for i in resumed]
        assert tail[: 120 - 4 * step] == stream[4 * step:], step
    # two ranks: disjoint shards of the same shuffle
    ranks = [list(ResumableSampler(data, 2, r, seed=3, batch_size=4)) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) == len(ranks[1]) == 20


# ----------------------------------------------------------------------------- digits


def test_mnist_falls_back_to_digits(tmp_path):
    dm = ImageDataModule("mnist", root=str(tmp_path), download=False, fallback=True, batch_size=32)
    with pytest.warns(UserWarning, match="digits") as record:
        dm.setup()
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert dm.source == "digits" and dm.image_shape == (1, 28, 28)
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 1797
    x, y = first_batch(dm.train_dataloader())
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.uint8
    assert 0 <= y.min() and y.max() <= 9
    # real digits: the test split is rows of load_digits, upsampled and scaled to 0..255
    images, labels = load_digits_images()
    assert images.max() == 255 and (images > 0).float().mean() > 0.2
    xt, yt = first_batch(dm.test_dataloader())
    matches = (images.unsqueeze(0) == xt[:4].unsqueeze(1)).flatten(2).all(-1)
    assert matches.any(1).all()


def test_digits_at_image_size_and_by_name(tmp_path):
    dm = ImageDataModule("mnist", root=str(tmp_path), download=False, image_size=32)
    with pytest.warns(UserWarning, match="falling back"):
        dm.setup()
    assert first_batch(dm.val_dataloader())[0].shape[1:] == (1, 32, 32)
    direct = ImageDataModule("digits", image_size=32)
    direct.setup()
    assert torch.equal(direct.test_set.tensors[0], dm.test_set.tensors[0])


def test_mnist_without_fallback_fails_clearly(tmp_path):
    """Before any work (the constructor): one line naming the root, the layout expected and the download flag."""
    with pytest.raises(FileNotFoundError, match="mnist not found under") as err:
        ImageDataModule("mnist", root=str(tmp_path), download=False, fallback=False)
    text = str(err.value)
    assert str(tmp_path) in text and "download=False" in text and "\n" not in text
    assert f"{tmp_path}/MNIST/raw/{{train-images-idx3-ubyte" in text and "data.download=true" in text


def test_random_flip_only_on_train():
    dm = ImageDataModule("digits", random_flip=True)
    dm.setup()
    assert dm.train_set.flip and not dm.val_set.flip and not dm.test_set.flip
    torch.manual_seed(0)
    x = dm.train_set.tensors[0][0]
    seen = {bool(torch.equal(dm.train_set[0][0], x)) for _ in range(40)}
    assert seen == {True, False}


@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_torchvision_arrays_become_nchw_uint8(monkeypatch, name):
    """No CIFAR-10/SVHN copy offline: feed the converter torchvision-shaped arrays instead."""
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)  # what we expect out
    labels = np.arange(20) % 10

    def fake(dataset_name, root, train, download):
        if name == "cifar10":  # CIFAR10.data is [N, H, W, C], targets a list
            return SimpleNamespace(data=pixels.transpose(0, 2, 3, 1).copy(), targets=labels.tolist())
        return SimpleNamespace(data=pixels, labels=labels)  # SVHN.data is [N, C, H, W]

    monkeypatch.setattr("glow.data.sources.torchvision_dataset", fake)
    monkeypatch.setattr("glow.data.sources.missing_files", lambda name, root: [])  # as if the files were there
    dm = ImageDataModule(name, download=False, val_fraction=0.0, batch_size=4)
    dm.setup()
    x, y = first_batch(dm.test_dataloader())
    assert x.dtype == torch.uint8 and torch.equal(x, torch.from_numpy(pixels[:4]))
    assert y.dtype == torch.long and y.tolist() == [0, 1, 2, 3]


# ----------------------------------------------------------------------------- image folders


def test_imagefolder_cifar_subset():
    folder = shared("cifar10-subset")
    dm = ImageDataModule("imagefolder", path=str(folder), batch_size=50, num_workers=0)
    assert dm.image_shape == (3, 32, 32) and dm.num_classes == 10
    assert dm.class_names[:3] == ["airplane", "automobile", "bird"]  # CIFAR-10's label order
    dm.setup()
    assert len(dm.train_set) + len(dm.val_set) == 3805 and len(dm.test_set) == 761
    x, y = first_batch(dm.train_dataloader())
    assert x.shape == (50, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.long
    x, y = first_batch(dm.test_dataloader())
    assert x.shape == (50, 3, 32, 32) and (y == 0).all()  # sequential: airplanes first


def make_folder(root: Path, classes=("a", "b"), per_class=10, size=(6, 8)) -> dict[str, np.ndarray]:
    """Write small random RGB PNGs as root/<class>/<i>.png; returns their pixels by path."""
    rng = np.random.default_rng(0)
    pixels = {}
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            path = root / name / f"{i:02d}.png"
            Image.fromarray(arr).save(path)
            pixels[str(path)] = arr
    return pixels


def test_imagefolder_holds_out_test_by_seed(tmp_path):
    pixels = make_folder(tmp_path)
    kwargs = dict(path=str(tmp_path), test_fraction=0.2, val_fraction=0.25, batch_size=4)
    dm = ImageDataModule("imagefolder", **kwargs)
    dm.setup()
    splits = [dm.train_set.paths, dm.val_set.paths, dm.test_set.paths]
    assert [len(s) for s in splits] == [12, 4, 4]
    assert sorted(sum(splits, [])) == sorted(pixels)  # disjoint and complete
    again = ImageDataModule("imagefolder", **kwargs)
    again.setup()
    assert again.test_set.paths == dm.test_set.paths and again.val_set.paths == dm.val_set.paths
    other = ImageDataModule("imagefolder", seed=1, **kwargs)
    other.setup()
    assert other.test_set.paths != dm.test_set.paths

    x, y = dm.test_set[0]  # decoded pixels are the file's pixels, labels follow folder order
    path = dm.test_set.paths[0]
    assert torch.equal(x, torch.from_numpy(pixels[path]).permute(2, 0, 1))
    assert y == ["a", "b"].index(Path(path).parent.name)
    assert dm.image_shape == (3, 6, 8)


@pytest.mark.parametrize("resize", ["pad", "resize", "center_crop"])
def test_imagefolder_image_size(tmp_path, resize):
    make_folder(tmp_path, size=(10, 14))
    size = {"pad": 16, "resize": 16, "center_crop": 10}[resize]  # pad grows, a crop shrinks
    dm = ImageDataModule("imagefolder", path=str(tmp_path), image_size=size, resize=resize, batch_size=4)
    dm.setup()
    assert first_batch(dm.train_dataloader())[0].shape == (4, 3, size, size) == (4, *dm.image_shape)


@pytest.mark.parametrize("num_workers", [0, 1])
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_names_the_file(tmp_path, num_workers, damage):
    make_folder(tmp_path / "train", per_class=3)
    make_folder(tmp_path / "test", per_class=3)
    bad = tmp_path / "test" / "b" / "zz_bad.png"  # sorts last, so the folder scan reads a good one
    if damage == "garbage":
        bad.write_bytes(b"this is not a png")
    else:
        noise = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)  # the others' size
        Image.fromarray(noise).save(bad)
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    # Named and skipped: a garbage file by the header probe at construction (a one-line error when
    # the bad share exceeds data.max_bad_fraction), a truncated one (its header is fine) when read.
    with pytest.raises(ValueError, match=f"max_bad_fraction=0.01 is exceeded: 1 of 13 .*{bad}") if damage == "garbage" \
            else contextlib.nullcontext():
        ImageDataModule("imagefolder", path=str(tmp_path), num_workers=num_workers, batch_size=8)
    with pytest.warns(UserWarning, match=str(bad)) if num_workers == 0 or damage == "garbage" \
            else contextlib.nullcontext():
        dm = ImageDataModule("imagefolder", path=str(tmp_path), num_workers=num_workers, batch_size=8,
                             max_bad_fraction=0.5)
        dm.setup()
        images = sum(x.shape[0] for x, _ in dm.test_dataloader())
    assert images == 6  # the six good test images


def test_imagefolder_path_relative_to_root(tmp_path):
    make_folder(tmp_path / "mine", per_class=2)
    dm = ImageDataModule("imagefolder", root=str(tmp_path), path="mine", test_fraction=0.5)
    assert dm.path == str(tmp_path / "mine") and dm.class_names == ["a", "b"]


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("kwargs, arg", [
    (dict(name="foo"), "name"),
    (dict(resize="stretch"), "resize"),
    (dict(image_size=0), "image_size"),
    (dict(image_size=-3), "image_size"),
    (dict(image_size=16), "image_size"),  # mnist is 28x28: cannot pad down to 16
    (dict(image_size=64, resize="center_crop"), "image_size"),
    (dict(batch_size=0), "batch_size"),
    (dict(eval_batch_size=-1), "eval_batch_size"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(test_fraction=0), "test_fraction"),
    (dict(classes=[12]), "classes"),
    (dict(classes=[]), "classes"),
    (dict(target="attr"), "target"),
    (dict(target="bbox"), "target"),
    (dict(path="/somewhere"), "path"),
    (dict(name="imagefolder"), "path"),
    (dict(name="imagefolder", path="/no/such/folder"), "path"),
    (dict(num_workers=-1), "num_workers"),
    (dict(limit_train=0), "limit_train"),
])
def test_bad_arguments_name_themselves(kwargs, arg):
    kwargs = {"name": "mnist", **kwargs}
    with pytest.raises(ValueError) as err:
        ImageDataModule(**kwargs)
    message = str(err.value)
    assert message.startswith(f"data.{arg}=") and "\n" not in message
    assert "is not allowed" in message


def test_batch_larger_than_train_split():
    dm = ImageDataModule("digits", limit_train=40, batch_size=64)
    dm.setup()
    with pytest.raises(ValueError, match="data.batch_size=64"):
        dm.train_dataloader()


# ----------------------------------------------------------------------------- metadata


def test_shapes_and_names_known_before_loading(tmp_path):
    celeba = ImageDataModule("celeba", root=str(tmp_path), image_size=64, resize="resize", target="attr")
    assert celeba.image_shape == (3, 64, 64) and celeba.num_classes == 1
    assert len(celeba.attribute_names) == 40 and celeba.attribute_names[-1] == "Young"
    cifar = ImageDataModule("cifar10", root=str(tmp_path))
    assert cifar.image_shape == (3, 32, 32) and cifar.class_names[-1] == "truck"
    assert cifar.attribute_names is None and cifar.num_workers == 0  # in memory: no workers
    assert ImageDataModule("fashion_mnist", image_size=32).image_shape == (1, 32, 32)


def test_fit_size():
    x = torch.full((2, 1, 5, 7), 9, dtype=torch.uint8)
    padded = fit_size(x, 8, "pad")  # odd margins: the extra pixel goes bottom/right
    assert padded.shape == (2, 1, 8, 8) and padded.dtype == torch.uint8
    assert padded[0, 0, 1:6, 0:7].eq(9).all() and padded.sum() == x.sum()
    assert fit_size(x, 4, "resize").shape == (2, 1, 4, 4)
    assert fit_size(x, 5, "center_crop").shape == (2, 1, 5, 5)
    assert fit_size(x, None, "pad") is x


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("GLOW_DATA_DIR", raising=False)
    assert default_data_dir() == str(Path(__file__).resolve().parents[1] / "data")
    monkeypatch.setenv("GLOW_DATA_DIR", str(tmp_path))
    assert default_data_dir() == str(tmp_path.resolve())
    assert ImageDataModule("mnist").root == str(tmp_path.resolve())
    assert 0 <= default_num_workers() <= 4
