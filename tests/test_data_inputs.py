"""Data at the edges: images of another size, any bit depth or mode, decompression bombs, special files,
missing and damaged data sets, a batch larger than the data. Each is read correctly or refused in one
line naming the file (or key), before any training step."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glow.data import ImageDataModule, read_image
from glow.data.images import CorruptImageError, MAX_IMAGE_PIXELS
from glow.data.screening import probe
from glow.data.sources import DataUnavailableError
from glow.errors import ConfigError

from tests.conftest import REPO, require_mnist


def folder(root: Path, size=(8, 8), per_class=4, test_per_class=2, mode="RGB") -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).convert(mode).save(
                    root / split / label / f"{i:02d}.png")
    return root


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


# ----------------------------------------------------------------------------- sizes


def test_a_test_image_of_another_size_is_refused_by_name_before_training(tmp_path):
    data = folder(tmp_path / "d")
    odd = data / "test" / "b" / "x.png"
    Image.new("RGB", (10, 10)).save(odd)
    with pytest.raises(ConfigError) as err:
        ImageDataModule("imagefolder", path=str(data), image_size=None)
    text = one_line(err)
    assert text.startswith("data.image_size=None is not allowed") and str(odd) in text and "10x10" in text
    # with a size to reach, the user's resize mode handles it: every batch comes out at that size
    dm = ImageDataModule("imagefolder", path=str(data), image_size=8, resize="resize", batch_size=2)
    dm.setup()
    assert {tuple(x.shape[1:]) for x, _ in dm.test_dataloader()} == {(3, 8, 8)}


def test_pad_refuses_an_image_larger_than_the_size_and_crop_one_smaller(tmp_path):
    data = folder(tmp_path / "d")
    big = data / "test" / "a" / "zz.png"
    Image.new("RGB", (16, 16)).save(big)
    with pytest.raises(ConfigError) as err:
        ImageDataModule("imagefolder", path=str(data), image_size=12, resize="pad")
    assert str(big) in one_line(err) and "pad" in one_line(err)
    with pytest.raises(ConfigError) as err:
        ImageDataModule("imagefolder", path=str(data), image_size=12, resize="center_crop")
    assert "00.png" in one_line(err) and "center_crop" in one_line(err)  # the 8x8 ones cannot grow


# ----------------------------------------------------------------------------- bit depths and modes


def test_16_bit_pixels_are_scaled_to_8_bits_not_clipped_white(tmp_path):
    values = np.array([[0, 257, 32896], [65535, 1000, 50000]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    expected = np.rint(values / 257.0).astype(np.uint8)
    assert torch.equal(read_image(str(path), "L")[0], torch.from_numpy(expected))
    assert torch.equal(read_image(str(path), "RGB"), torch.from_numpy(expected).expand(3, -1, -1))
    as_int32 = tmp_path / "i32.tif"
    Image.fromarray(values.astype(np.int32), "I").save(as_int32)
    assert torch.equal(read_image(str(as_int32), "L")[0], torch.from_numpy(expected))


def test_a_folder_of_16_bit_pngs_trains_on_its_real_pixels(tmp_path):
    rng = np.random.default_rng(0)
    pixels = {}
    for split, count in (("train", 6), ("test", 2)):
        (tmp_path / split / "a").mkdir(parents=True)
        for i in range(count):
            v = rng.integers(0, 65536, (8, 8), dtype=np.uint16)
            Image.fromarray(v).save(tmp_path / split / "a" / f"{i}.png")
            pixels[f"{split}/{i}"] = v
    dm = ImageDataModule("imagefolder", path=str(tmp_path), channels=1, batch_size=2, val_fraction=0.0)
    dm.setup()
    x = torch.cat([b for b, _ in dm.test_dataloader()]).float()
    expected = np.rint(np.stack([pixels["test/0"], pixels["test/1"]]) / 257.0)
    assert torch.equal(x[:, 0], torch.from_numpy(expected).float())
    assert 100 < x.mean() < 155  # uniform 16-bit noise, not white (it was 254.7)


def test_other_modes_read_as_pil_converts_them(tmp_path):
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (6, 6, 3), dtype=np.uint8))
    for mode in ("1", "P", "LA", "RGBA", "CMYK", "L"):
        path = tmp_path / f"{mode}.{'tif' if mode == 'CMYK' else 'png'}"
        image = rgb.convert(mode)
        image.save(path)
        for target in ("L", "RGB"):
            expected = np.asarray(image.convert(target))
            got = read_image(str(path), target).permute(1, 2, 0).numpy()
            assert np.array_equal(got.squeeze(-1) if target == "L" else got, expected), (mode, target)
    one_bit = read_image(str(tmp_path / "1.png"), "L")
    assert set(one_bit.unique().tolist()) <= {0, 255}


def test_float_images_and_decompression_bombs_are_refused_by_name(tmp_path):
    float_image = tmp_path / "f.tif"
    Image.fromarray(np.ones((4, 4), dtype=np.float32)).save(float_image)
    with pytest.raises(CorruptImageError, match="mode F") as err:
        read_image(str(float_image), "L")
    assert str(float_image) in one_line(err)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (6000, 6000)).save(bomb)  # 36M pixels in a few kB
    assert 6000 * 6000 > MAX_IMAGE_PIXELS and bomb.stat().st_size < 100_000
    with pytest.raises(CorruptImageError, match="exceed the limit") as err:
        read_image(str(bomb), "L")
    assert "decompression bomb" in one_line(err)
    assert "exceed the limit" in probe(str(bomb)) and "mode F" in probe(str(float_image))
    # in a data folder, both are screened out like any unreadable file: named in the one-line refusal
    data = folder(tmp_path / "d")
    shutil.copy(bomb, data / "train" / "a" / "zz.png")
    with pytest.raises(ValueError, match="max_bad_fraction") as err:
        ImageDataModule("imagefolder", path=str(data), image_size=8)
    assert "zz.png" in one_line(err) and "decompression bomb" in one_line(err)


# ----------------------------------------------------------------------------- special files


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_named_like_an_image_is_skipped_not_read(tmp_path):
    data = folder(tmp_path / "d")
    os.mkfifo(data / "train" / "a" / "zz.png")  # opening it for reading would block forever
    start = time.time()
    with pytest.warns(UserWarning, match="not regular files.*a/zz.png"):
        dm = ImageDataModule("imagefolder", path=str(data), image_size=8, batch_size=2)
    assert time.time() - start < 30
    assert len(dm._folder.train[0]) == 8


SCREEN_A_FIFO = """
import os, sys
from glow.data.screening import probe_all
os.mkfifo(sys.argv[1])
print("screening", flush=True)
probe_all([sys.argv[1]] * 3)
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_ctrl_c_stops_a_screening_stuck_on_a_file(tmp_path):
    """A probe stuck in open() (a FIFO here, a stalled mount in life) must not swallow Ctrl-C."""
    proc = subprocess.Popen([sys.executable, "-c", SCREEN_A_FIFO, str(tmp_path / "stuck.png")], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "screening"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("Ctrl-C did not stop a screening stuck on a FIFO")
    assert proc.returncode != 0 and "KeyboardInterrupt" in err


# ----------------------------------------------------------------------------- data sets


def test_a_missing_data_set_names_its_layout_and_the_download_flag(tmp_path):
    with pytest.raises(ConfigError) as err:
        ImageDataModule("cifar10", root=str(tmp_path), download=False)
    text = one_line(err)
    assert f"{tmp_path}/cifar-10-batches-py/{{data_batch_1" in text and "data.download=true" in text
    assert isinstance(err.value, FileNotFoundError)  # both: a config error and a missing file


def test_a_truncated_mnist_file_is_named_corrupt_and_never_replaced_by_digits(tmp_path):
    mnist = require_mnist()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (mnist / "MNIST" / "raw").iterdir():
        (raw / f.name).symlink_to(f)
    bad = raw / "t10k-images-idx3-ubyte"
    bad.unlink()
    bad.write_bytes((mnist / "MNIST" / "raw" / bad.name).read_bytes()[:1_000_000])
    for download in (False, True):  # named from its header before any work, never downloaded over or replaced
        with pytest.raises(DataUnavailableError) as err:
            ImageDataModule("mnist", root=str(tmp_path), download=download, fallback=True)
        text = one_line(err)
        assert str(bad) in text and "corrupt" in text and "not found" not in text and "digits" not in text


def test_a_data_set_whose_files_are_there_but_do_not_load_is_named_corrupt(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"):
        (folder / name).write_bytes(b"not a pickle")
    dm = ImageDataModule("cifar10", root=str(tmp_path), download=True)
    dm.prepare_data()  # present: nothing is downloaded over them
    with pytest.raises(DataUnavailableError) as err:
        dm.setup()
    assert "corrupt" in one_line(err) and str(folder) in one_line(err) and "data.download=true" in one_line(err)


def test_a_batch_larger_than_the_data_set_is_one_config_error(tmp_path):
    data = str(folder(tmp_path / "d"))  # 8 training images, 2 of them held out for validation
    dm = ImageDataModule("imagefolder", path=data, image_size=8, batch_size=64, val_fraction=0.25)  # test images only
    with pytest.raises(ConfigError) as err:  # for training: known from the folder's index, before any decoding
        dm.check_batch_fits()
    assert one_line(err).startswith("data.batch_size=64 is not allowed") and "at most 6 training" in one_line(err)
    with pytest.raises(ConfigError):  # a data set of known size, before it is loaded
        ImageDataModule("digits", batch_size=5000).check_batch_fits()
    # the exact count (what the loader holds: here after a test hold-out) is checked again where it is known
    flat = tmp_path / "flat" / "a"
    flat.mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (8, 8), (i, i, i)).save(flat / f"{i}.png")
    dm = ImageDataModule("imagefolder", path=str(flat.parent), batch_size=5, val_fraction=0.25, test_fraction=0.5)
    dm.check_batch_fits()  # at most 6 (the test hold-out is not counted before the split)
    dm.setup()
    with pytest.raises(ConfigError) as err:
        dm.train_dataloader()
    assert one_line(err).startswith("data.batch_size=5 is not allowed")
