"""sample.py and glow.sampling on checkpoints written by real short train.py runs on MNIST.

Two checkpoints are trained once per module: an unconditional one (a few steps, EMA on) and a
class-conditional one with a classification head on MNIST 3s and 8s. The class-conditional model is
trained on 8x8 MNIST: Glow's class prior shifts each top-latent channel by a constant, so after a
few hundred steps class information shows in samples only where the top latent is small (here 2x2).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

import sample as sample_script
import train
from glow import sampling
from glow.data import ImageDataModule
from glow.model import Glow
from glow.quantize import preprocess, to_uint8
from tests.conftest import CONF, REPO, compose_train, require_mnist

CLASSES = [3, 8]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and a busy 2-core box makes two threads crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mnist_overrides(root: Path) -> list[str]:
    return [f"data.root={root}", "data.download=false", "data.fallback=false", "test_after_fit=false"]


@pytest.fixture(scope="module")
def mnist() -> Path:
    return require_mnist()


@pytest.fixture(scope="module")
def plain_ckpt(tmp_path_factory, mnist) -> Path:
    """Unconditional tiny Glow (debug preset: L=2, K=2, 16 hidden), 4 steps, with EMA weights."""
    out = tmp_path_factory.mktemp("plain")
    train.run(compose_train(out, mnist_overrides(mnist) + ["trainer.max_steps=4", "module.ema_decay=0.9",
                                                         "callbacks.samples.every_n_steps=1000"]))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def class_ckpt(tmp_path_factory, mnist) -> Path:
    """Class-conditional Glow with a class head on 8x8 MNIST 3s and 8s: 300 steps (~10 s).

    Calibrated so the nearest-class-mean check passes with a wide margin (0.75-0.95 over training
    seeds, couplings and sampling seeds, against the 0.6 asked for).
    """
    out = tmp_path_factory.mktemp("class")
    train.run(compose_train(out, mnist_overrides(mnist) + [
        f"++data.classes=[{','.join(map(str, CLASSES))}]", "data.image_size=8", "data.resize=resize",
        "data.batch_size=32", "model.levels=2", "model.steps=4", "model.hidden_channels=32",
        "model.conditional=class", "++model.class_head=true", "module.classifier_weight=0.3",
        "module.optimizer=adam", "module.lr=1e-2", "module.warmup_steps=20",
        "trainer.max_steps=300", "trainer.val_check_interval=300", "callbacks.samples.every_n_steps=1000"]))
    return out / "checkpoints" / "last.ckpt"


def compose_sample(tmp_path: Path, mnist: Path, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = [f"paths.output_dir={tmp_path}", f"data.root={mnist}", "data.download=false",
                "data.fallback=false", "device=cpu"]
        return compose(config_name="sample", overrides=base + list(overrides))


def run_sample(tmp_path: Path, mnist: Path, overrides: list[str]) -> dict:
    return sample_script.run(compose_sample(tmp_path, mnist, overrides))


def png_tiles(path: Path, rows: int, cols: int, size: tuple[int, int], padding: int = 1) -> torch.Tensor:
    """Check a torchvision grid's pixel size, then cut it into its tiles: uint8 [rows * cols, H, W] (first channel)."""
    h, w = size
    image = Image.open(path)
    assert image.size == (cols * (w + padding) + padding, rows * (h + padding) + padding), (image.size, rows, cols)
    pixels = torch.from_numpy(np.array(image.convert("RGB")))[..., 0]
    return torch.stack([pixels[padding + r * (h + padding):][:h, padding + c * (w + padding):][:, :w]
                        for r in range(rows) for c in range(cols)])


def mnist_test_images(mnist: Path, count: int, size: int = 32, resize: str = "pad",
                      classes=None) -> tuple[torch.Tensor, torch.Tensor]:
    dm = ImageDataModule("mnist", root=str(mnist), image_size=size, resize=resize, download=False, classes=classes)
    dm.setup()
    return dm.test_set.tensors[0][:count], dm.test_set.tensors[1][:count]


# -- every task writes a grid of the expected size -------------------------------------------
GRIDS = [  # (checkpoint, overrides, rows, cols): batch_size=2 so that every task is batched
    ("plain", ["task=sample", "n=5"], 2, 3),
    ("plain", ["task=sample", "n=5", "nrow=5"], 1, 5),
    ("plain", ["task=temperature", "n=3"], 8, 3),
    ("plain", ["task=temperature", "n=2", "temperatures=[0,1]"], 2, 2),
    ("plain", ["task=interpolate", "n=2", "points=5"], 2, 5),
    ("plain", ["task=interpolate", "indices=[4,5]", "mode=slerp", "points=3"], 1, 3),
    ("plain", ["task=reconstruct", "n=3"], 1, 6),
    ("plain", ["task=manipulate", "n=2", "attribute=8", "baseline=3", "direction_images=8"], 2, 5),
    ("class", ["task=class", "n=3", f"classes=[{CLASSES[0]},{CLASSES[1]}]"], 2, 3),
    ("class", ["task=class", "n=2"], 10, 2),
    ("class", ["task=sample", "n=4", "label=3"], 2, 2),
    ("class", ["task=reconstruct", "n=2", "data.image_size=8", "data.resize=resize"], 1, 4),
]


@pytest.mark.slow
@pytest.mark.parametrize("which,overrides,rows,cols", GRIDS, ids=[" ".join(g[1]) for g in GRIDS])
def test_every_task_writes_a_grid_of_the_expected_size(tmp_path, mnist, plain_ckpt, class_ckpt, capsys,
                                                       which, overrides, rows, cols):
    ckpt = plain_ckpt if which == "plain" else class_ckpt
    result = run_sample(tmp_path, mnist, [f"ckpt_path={ckpt}", "batch_size=2"] + overrides)
    path = Path(result["path"])
    assert path.is_file() and path.parent == tmp_path and path.suffix == ".png"
    assert str(path) in capsys.readouterr().out  # the path is printed
    assert (result["rows"], result["cols"]) == (rows, cols)
    size = 32 if which == "plain" else 8
    png_tiles(path, rows, cols, (size, size))


# -- numerics ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_temperature_zero_is_the_same_image_for_any_seed(tmp_path, mnist, plain_ckpt):
    model = sampling.load(plain_ckpt)
    at_zero = [sampling.sample(model, 3, 0.0, torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    assert torch.equal(at_zero[0], at_zero[1])
    assert torch.equal(at_zero[0][0], at_zero[0][2])  # and the same for every sample: the mode of each prior
    at_07 = [sampling.sample(model, 3, 0.7, torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    assert not torch.equal(at_07[0], at_07[1])
    # and through sample.py: T=0 gives the same PNG for any seed; a seed reproduces its grid
    pngs = {}
    for seed, temperature in [(0, 0.0), (1, 0.0), (0, 0.7), (0, 0.7)]:
        out = tmp_path / f"{seed}_{temperature}_{len(pngs)}"
        result = run_sample(out, mnist, [f"ckpt_path={plain_ckpt}", "n=4", f"seed={seed}",
                                         f"temperature={temperature}"])
        pngs[(seed, temperature, len(pngs))] = Path(result["path"]).read_bytes()
    values = list(pngs.values())
    assert values[0] == values[1] and values[2] == values[3] and values[0] != values[2]


@pytest.mark.slow
def test_sampling_runs_in_fp32_under_autocast(plain_ckpt):
    model = sampling.load(plain_ckpt)
    plain = sampling.sample(model, 2, 0.7, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = sampling.sample(model, 2, 0.7, torch.Generator().manual_seed(0))
    assert mixed.dtype == torch.float32 and torch.equal(plain, mixed)


@pytest.mark.slow
def test_temperature_rows_share_their_noise(plain_ckpt):
    model = sampling.load(plain_ckpt)
    grid = sampling.temperature_sweep(model, [0.0, 0.5, 0.5], 3, torch.Generator().manual_seed(0), batch_size=2)
    assert grid.shape == (9, *model.image_shape)
    assert torch.equal(grid[3:6], grid[6:9])  # same temperature, same noise: same row
    assert torch.equal(grid[0], grid[1])  # T=0: the mode in every column (the third is another batch)
    assert torch.allclose(grid[0], grid[2], atol=1e-5)
    # batching does not change the samples at a given seed and batch size, nor the mode
    again = sampling.temperature_sweep(model, [0.0, 0.5, 0.5], 3, torch.Generator().manual_seed(0), batch_size=2)
    assert torch.equal(grid, again)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["linear", "slerp"])
def test_interpolation_end_points_reproduce_the_inputs(mnist, plain_ckpt, mode):
    model = sampling.load(plain_ckpt)
    images, _ = mnist_test_images(mnist, 4)
    x = preprocess(images, model.n_bits, dequantize=False)
    rows = sampling.interpolate(model, x[0::2], x[1::2], points=6, mode=mode, batch_size=3).view(2, 6, *x.shape[1:])
    assert (rows[:, 0] - x[0::2]).abs().max() < 1e-4
    assert (rows[:, -1] - x[1::2]).abs().max() < 1e-4
    assert (rows[:, 2] - rows[:, 0]).abs().max() > 1e-3  # the middle moved


@pytest.mark.slow
def test_interpolation_between_image_files(tmp_path, mnist, plain_ckpt):
    """images=[a.png,b.png]: 28x28 files, padded to 32 as data=mnist does; the end tiles ARE the inputs."""
    images, _ = mnist_test_images(mnist, 2, size=28)
    files = []
    for i, image in enumerate(images):
        files.append(tmp_path / f"digit{i}.png")
        Image.fromarray(image[0].numpy()).save(files[-1])
    result = run_sample(tmp_path, mnist, [f"ckpt_path={plain_ckpt}", "task=interpolate", "points=4",
                                          f"images=[{files[0]},{files[1]}]"])
    tiles = png_tiles(Path(result["path"]), 1, 4, (32, 32))
    padded = torch.nn.functional.pad(images[:, 0], (2, 2, 2, 2))
    assert torch.equal(tiles[0], padded[0]) and torch.equal(tiles[-1], padded[1])


@pytest.mark.slow
@pytest.mark.parametrize("which", ["plain", "class"])
def test_reconstruction_is_exact(tmp_path, mnist, plain_ckpt, class_ckpt, which):
    ckpt = plain_ckpt if which == "plain" else class_ckpt
    model = sampling.load(ckpt)
    size = model.image_shape[-1]
    images, labels = mnist_test_images(mnist, 6, size=size, resize="pad" if size == 32 else "resize")
    x = preprocess(images, model.n_bits, dequantize=False)
    cond = labels if model.kind.labels else None
    pairs = sampling.reconstruction_pairs(model, x, cond, batch_size=4)
    assert torch.equal(pairs[0::2], x)
    assert (pairs[1::2] - x).abs().max() < 1e-4
    assert torch.equal(to_uint8(pairs[1::2]), images)  # the same pixels
    # a batch-size-independent, exact inverse: every level's latent is kept
    zs = sampling.encode_latents(model, x, cond, batch_size=5)
    assert torch.allclose(sampling.decode_latents(model, zs, cond, batch_size=2), pairs[1::2], atol=1e-6)
    if which == "plain":  # and sample.py writes originals | reconstructions with identical pixels
        result = run_sample(tmp_path, mnist, [f"ckpt_path={ckpt}", "task=reconstruct", "n=5", "batch_size=2"])
        tiles = png_tiles(Path(result["path"]), 1, 10, (32, 32))
        assert torch.equal(tiles[0::2], tiles[1::2])


@pytest.mark.slow
def test_manipulation_direction_and_scale_zero(mnist, plain_ckpt):
    model = sampling.load(plain_ckpt)
    images, labels = mnist_test_images(mnist, 200)
    x = preprocess(images, model.n_bits, dequantize=False)
    keep = (labels == 3) | (labels == 8)
    direction = sampling.attribute_direction(model, x[keep], labels[keep] == 8, batch_size=64)
    zs = sampling.encode_latents(model, x[keep])
    for d, z in zip(direction, zs):
        expected = z[labels[keep] == 8].mean(0) - z[labels[keep] == 3].mean(0)
        assert d.shape == z.shape[1:] and torch.allclose(d, expected, atol=1e-5)
    threes = x[labels == 3][:2]
    rows = sampling.manipulate(model, threes, direction, [-1.0, 0.0, 1.0], batch_size=4).view(2, 3, *x.shape[1:])
    assert (rows[:, 1] - threes).abs().max() < 1e-4  # scale 0 is the exact reconstruction
    with pytest.raises(ValueError, match="with and without"):
        sampling.attribute_direction(model, x[:4], torch.ones(4, dtype=torch.bool))


# -- class conditioning ----------------------------------------------------------------------
@pytest.mark.slow
def test_class_conditional_samples_follow_their_label(mnist, class_ckpt):
    """2 x 32 samples at T=0.7, classified by the nearest class mean of real training 3s and 8s."""
    model = sampling.load(class_ckpt)
    dm = ImageDataModule("mnist", root=str(mnist), image_size=8, resize="resize", download=False, classes=CLASSES)
    dm.setup()
    images, labels = dm.train_set.tensors
    x = preprocess(images, model.n_bits, dequantize=False).flatten(1)
    means = torch.stack([x[labels == c].mean(0) for c in CLASSES])
    grid = sampling.class_grid(model, CLASSES, 32, temperature=0.7, generator=torch.Generator().manual_seed(0))
    finite = torch.isfinite(grid.flatten(1)).all(1)
    predicted = torch.cdist(torch.nan_to_num(grid.flatten(1)).clamp(-0.5, 0.5), means).argmin(1)
    wanted = torch.arange(2).repeat_interleave(32)
    accuracy = ((predicted == wanted) & finite).float().mean().item()
    assert accuracy > 0.6, accuracy


@pytest.mark.slow
def test_class_head_gives_logits_and_leaves_log_prob_alone(mnist, class_ckpt):
    model = sampling.load(class_ckpt)
    assert model.class_head is not None
    images, labels = mnist_test_images(mnist, 64, size=8, resize="resize", classes=CLASSES)
    x = preprocess(images, model.n_bits, dequantize=False)
    with torch.no_grad():
        log_prob, logits = model.log_prob_and_logits(x, labels)
        assert torch.equal(log_prob, model.log_prob(x, labels))
        _, other = model.log_prob_and_logits(x, torch.zeros_like(labels))
        assert torch.allclose(other, logits)  # the flow ignores the labels: any label, the same logits
    assert logits.shape == (64, 10)
    accuracy = (logits[:, CLASSES].argmax(1) == (labels == CLASSES[1]).long()).float().mean()
    assert accuracy > 0.8, accuracy


def test_class_head_arguments_are_checked():
    with pytest.raises(ValueError, match="model.class_head=True is not allowed"):
        Glow((1, 8, 8), levels=2, steps=1, hidden_channels=4, class_head=True)
    from glow.module import DensityModule

    config = dict(image_shape=[1, 8, 8], levels=2, steps=1, hidden_channels=4)
    with pytest.raises(ValueError, match="module.classifier_weight=0.5 is not allowed"):
        DensityModule(config, classifier_weight=0.5)
    DensityModule(dict(config, conditional="class", class_head=True), classifier_weight=0.5)


# -- reporting and errors ----------------------------------------------------------------------
@pytest.mark.slow
def test_nonfinite_samples_are_reported_and_left_grey(tmp_path, mnist, plain_ckpt, monkeypatch, capsys):
    real_sample = sampling.sample

    def poisoned(*args, **kwargs):
        images = real_sample(*args, **kwargs)
        images[1] = float("nan")
        return images

    monkeypatch.setattr("glow.sampling.task_grids.sample", poisoned)  # the function sample.py's task calls
    result = run_sample(tmp_path, mnist, [f"ckpt_path={plain_ckpt}", "n=4"])
    assert result["nonfinite"] == 1
    assert "warning: 1 of 4 images are non-finite" in capsys.readouterr().err
    tiles = png_tiles(Path(result["path"]), 2, 2, (32, 32))
    assert (tiles[1] == 128).all()  # mid-grey


@pytest.mark.slow
@pytest.mark.parametrize("override,message", [
    ("task=bogus", "task='bogus' is not allowed: use one of sample, temperature, interpolate, reconstruct, "
                   "class, manipulate"),
    ("temperature=-0.5", "temperature=-0.5 is not allowed: use a number >= 0"),
    ("temperatures=[0.5,-1]", "temperatures=[0.5, -1] is not allowed: use a non-empty list of numbers >= 0"),
    ("ckpt_path=null", "ckpt_path=None is not allowed: give the path of a checkpoint written by train.py"),
    ("ckpt_path=/no/such.ckpt", "ckpt_path='/no/such.ckpt' is not allowed"),
    ("n=0", "n=0 is not allowed: use an integer in 1..4096"),
    ("n=-2", "n=-2 is not allowed"),
    ("batch_size=0", "batch_size=0 is not allowed: use a positive integer"),
    ("mode=cubic", "mode='cubic' is not allowed: use one of linear, slerp"),
    ("device=tpu", "device='tpu' is not allowed: use one of auto, cpu, cuda"),
    ("task=class", "task='class' is not allowed: this checkpoint is not class-conditional"),
    ("task=interpolate indices=[0,1,2]", "indices=[0, 1, 2] is not allowed: task=interpolate pairs them up"),
    ("task=reconstruct indices=[99999]", "indices=[99999] is not allowed: the test split has 10000 images"),
    ("task=manipulate", "attribute=None is not allowed: task=manipulate needs one"),
    ("task=manipulate attribute=12", "attribute=12 is not allowed: use a class label 0..9 of mnist"),
    ("task=reconstruct data.image_size=16 data.resize=resize",
     "data='mnist' is not allowed: its images are (1, 16, 16)"),
])
def test_bad_options_give_one_line_and_exit_code_2(tmp_path, mnist, plain_ckpt, capsys, override, message):
    overrides = override.split() if override.startswith("ckpt_path") else [f"ckpt_path={plain_ckpt}"] + override.split()
    with pytest.raises(SystemExit) as exit_info:
        run_sample(tmp_path, mnist, overrides)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error: ") and message in err, err
    assert len(err.splitlines()) == 1
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.slow
def test_command_line(tmp_path, mnist, plain_ckpt):
    """The Hydra entry point: prints the PNG's path (in the run dir); a bad option exits 2 with one line."""
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOW_DATA_DIR=str(mnist))
    command = [sys.executable, "sample.py", f"ckpt_path={plain_ckpt}", f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(command + ["task=temperature", "n=2", "temperatures=[0,1]"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path / 'temperature.png'}" in done.stdout
    png_tiles(tmp_path / "temperature.png", 2, 2, (32, 32))
    bad = subprocess.run(command + ["task=bogus"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("config error: task='bogus' is not allowed")


@pytest.mark.slow
def test_mnist_class_experiment_composes_and_trains(tmp_path, mnist):
    """experiment=mnist_class (class prior + head + classifier weight) through one fast_dev_run batch."""
    cfg = compose_train(tmp_path, [f"data.root={mnist}", "data.download=false", "data.fallback=false",
                                   "experiment=mnist_class", "model.levels=2", "model.steps=1"],
                        debug="fast_dev_run")
    assert cfg.model.conditional == "class" and cfg.model.class_head and cfg.module.classifier_weight > 0
    results = train.run(cfg)
    assert torch.isfinite(torch.tensor(results["test_bpd"]))
