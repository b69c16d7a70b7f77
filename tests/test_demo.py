"""The web page's logic without a browser: uploads, brush masks, every tab's action through glow.sampling,
the checkpoint choice, and errors as one line. (The page itself in Chromium: tests/test_demo_browser.py.)"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from glow.errors import ConfigError
from glow.demo import actions
from glow.demo.images import display_factor, from_display, mask_from_layers, read_upload, to_display
from glow.demo.serve import choose_checkpoint, validate_demo
from glow.demo.session import DemoInputError, DemoSession, newest_checkpoint
from glow.exactness import perturb
from glow.model import Glow
from glow.quantize import preprocess, to_uint8
from glow.sampling import completions_uint8, inpaint, sample


def tiny(conditional=None, channels=1) -> Glow:
    torch.manual_seed(0)
    model = Glow((channels, 8, 8), levels=2, steps=2, hidden_channels=8, conditional=conditional, cond_channels=4)
    return perturb(model, scale=0.05).eval()


def session_of(model: Glow) -> DemoSession:
    return DemoSession(model, ckpt_path=__import__("pathlib").Path("tiny.ckpt"), hparams={}, run_config=None,
                       results=None, data_config=None)


def digit() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (1, 8, 8), generator=g, dtype=torch.uint8)


# -- uploads ---------------------------------------------------------------------------------------
def test_upload_round_trip_is_exact(tmp_path):
    x = digit()
    Image.fromarray(to_display(x)).save(tmp_path / "a.png")
    assert torch.equal(read_upload(tmp_path / "a.png", (1, 8, 8)), x)
    rgb = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    Image.fromarray(to_display(rgb)).save(tmp_path / "c.png")
    assert torch.equal(read_upload(tmp_path / "c.png", (3, 8, 8)), rgb)
    assert torch.equal(from_display(to_display(rgb), 3), rgb)


@pytest.mark.parametrize("case, message", [
    ("text", "notes.png is not an image file (UnidentifiedImageError): upload a PNG or JPEG"),
    ("size", "a.png is 9x8 pixels but this model takes 8x8 images"),
    ("colour", "a.png has 3 channels (colour) but this model takes 1 channel (greyscale)"),
    ("grey", "a.png has 1 channel (greyscale) but this model takes 3 channels (colour)"),
    ("none", "no image: upload one first"),
])
def test_bad_uploads_are_one_clear_line(tmp_path, case, message):
    shape = (3, 8, 8) if case == "grey" else (1, 8, 8)
    path = tmp_path / ("notes.png" if case == "text" else "a.png")
    if case == "text":
        path.write_text("not an image\n")
    elif case == "size":
        Image.fromarray(np.zeros((8, 9), np.uint8)).save(path)
    elif case == "colour":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    elif case == "grey":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    with pytest.raises(DemoInputError) as err:
        read_upload(None if case == "none" else path, shape)
    assert str(err.value) == message


# -- brush masks -----------------------------------------------------------------------------------
def test_mask_from_brush_layers():
    factor = display_factor(8)                    # the editor shows an 8x8 image enlarged 32 times
    layer = np.zeros((8 * factor, 8 * factor, 4), np.uint8)
    layer[2 * factor:3 * factor, 5 * factor:7 * factor, 3] = 255   # model pixels (2, 5) and (2, 6), fully
    layer[6 * factor:6 * factor + factor // 4, 0:factor, 3] = 255  # a quarter of pixel (6, 0): not enough
    mask = mask_from_layers([layer], (1, 8, 8))
    expected = torch.zeros(1, 8, 8)
    expected[0, 2, 5:7] = 1
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("layers", [None, [], [np.zeros((64, 64, 4), np.uint8)]])
def test_empty_mask_is_refused(layers):
    with pytest.raises(DemoInputError, match="the mask is empty: paint the missing region"):
        mask_from_layers(layers, (1, 8, 8))


# -- the actions go through glow.sampling ----------------------------------------------------------
def test_sample_tab_draws_what_glow_sampling_draws():
    model = tiny()
    picture, summary = actions.sample_images(session_of(model), 0.5, 4, 3)
    expected = to_uint8(sample(model, 4, 0.5, torch.Generator().manual_seed(3)), model.n_bits)
    tiles = [picture[1 + r * 9: 9 + r * 9, 1 + c * 9: 9 + c * 9, 0] for r in range(2) for c in range(2)]
    assert np.array_equal(np.stack(tiles), expected[:, 0].numpy())
    assert summary == "4 samples at T=0.5"
    again, _ = actions.sample_images(session_of(model), 0.5, 4, 3)
    other, _ = actions.sample_images(session_of(model), 0.5, 4, 4)
    assert np.array_equal(again, picture) and not np.array_equal(other, picture)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n=0 is not allowed: use an integer in 1..256"),
    ({"temperature": -1}, "temperature=-1 is not allowed: use a number >= 0"),
    ({"seed": 1.5}, "seed=1.5 is not allowed: use an integer in 0..4294967295"),
])
def test_sample_tab_bad_values(kwargs, message):
    values = {"temperature": 0.7, "n": 4, "seed": 0, **kwargs}
    with pytest.raises(DemoInputError) as err:
        actions.sample_images(session_of(tiny()), **values)
    assert str(err.value) == message


def test_sample_tab_refuses_an_inpainting_model():
    with pytest.raises(DemoInputError, match="inpainting model"):
        actions.sample_images(session_of(tiny("image")), 0.7, 4, 0)


def test_interpolation_ends_at_the_inputs_and_reconstruction_is_exact():
    session = session_of(tiny())
    a, b = digit(), torch.flip(digit(), dims=[-1])
    row, summary = actions.interpolation(session, a, b, 4, "slerp")
    assert row.shape == (10, 4 * 9 + 1, 3) and "slerp interpolation in 4 steps" in summary
    assert np.array_equal(row[1:9, 1:9, 0], a[0].numpy()) and np.array_equal(row[1:9, 28:36, 0], b[0].numpy())
    original, rebuilt, summary = actions.reconstruction(session, a)
    assert np.array_equal(original, a[0].numpy()) and np.array_equal(rebuilt, a[0].numpy())
    assert "0 of 64 pixels differ" in summary


@pytest.mark.parametrize("conditional, method", [(None, "latent"), ("image", "cglow")])
def test_inpaint_tab_keeps_the_observed_pixels(monkeypatch, conditional, method):
    """The tab's completions: the hole is what the model produced (its decode_noise, the last image it
    drew, recorded before the route pastes the input back), the observed pixels the upload's, bit-exact;
    and the same seed draws the same completions as glow.sampling's own inpaint."""
    model = tiny(conditional)
    image = digit()
    mask = torch.zeros(1, 8, 8)
    mask[0, 2:5, 3:6] = 1
    drawn, decode_noise = [], model.decode_noise

    def recording(*args, **kwargs):
        out = decode_noise(*args, **kwargs)
        drawn.append(out.detach().clone())
        return out

    monkeypatch.setattr(model, "decode_noise", recording)
    seen = []
    completions, masked, summary = actions.inpainting(session_of(model), image, mask, 3, None, 4, 0,
                                                      progress=lambda f, desc: seen.append(f))
    filled = np.stack(completions)
    hole = mask[0].bool().numpy()
    model_output = to_uint8(drawn[-1], model.n_bits)[:, 0].numpy()  # [n, H, W], before any paste-back
    assert filled.shape == (3, 8, 8)
    assert np.array_equal(filled[:, hole], model_output[:, hole])  # the hole is the model's
    assert (filled[:, ~hole] == image[0].numpy()[~hole]).all()  # the rest is the upload's
    assert not np.array_equal(model_output[:, ~hole], filled[:, ~hole])  # which the model did not reproduce
    assert (masked[hole] == 128).all() and np.array_equal(masked[~hole], image[0].numpy()[~hole])
    assert f"3 completions ({method}" in summary and "9 missing pixels" in summary
    assert not np.array_equal(filled[0][hole], filled[1][hole])
    # the same completions as glow.sampling's own inpaint with the same seed
    first = drawn[-1]
    x = preprocess(image[None], model.n_bits, dequantize=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        result = inpaint(model, x, mask[None], n=3, steps=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(drawn[-1], first)
    assert np.array_equal(filled[:, hole], to_uint8(result.completions, model.n_bits)[0, :, 0].numpy()[:, hole])
    if method == "latent":
        assert seen and seen[-1] == 1.0  # progress reached the end


def test_inpaint_refuses_an_empty_mask():
    with pytest.raises(DemoInputError, match="the mask is empty"):
        actions.inpainting(session_of(tiny()), digit(), torch.zeros(1, 8, 8), 2, None, 3, 0)


# -- checkpoints, run directories, options ---------------------------------------------------------
def fake_run(root, name, model: Glow, bpd=None, data=None):
    """A run directory as train.py leaves it: checkpoints/last.ckpt, results.json, .hydra/config.yaml."""
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    config = {"levels": 2, "steps": 2, "hidden_channels": 8, "cond_channels": 4, "image_shape": [1, 8, 8]}
    torch.save({"hyper_parameters": {"model_config": config, "n_bits": 8},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, run / "checkpoints" / "last.ckpt")
    if bpd is not None:
        (run / "results.json").write_text(json.dumps({"test_bpd": bpd, "test_images": 10}))
    if data is not None:
        (run / ".hydra").mkdir()
        (run / ".hydra" / "config.yaml").write_text(f"data:\n  name: {data}\nmodel:\n  levels: 2\n")
    return run / "checkpoints" / "last.ckpt"


def test_newest_checkpoint_and_the_message_without_one(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no last.ckpt under .*: train one first with `make train`"):
        choose_checkpoint(None, tmp_path)
    model = tiny()
    old = fake_run(tmp_path, "mnist/a", model)
    new = fake_run(tmp_path, "mnist/b", model)
    os.utime(old, (time.time() - 100, time.time() - 100))
    assert newest_checkpoint(tmp_path) == new
    assert choose_checkpoint(None, tmp_path) == new
    assert f"using the newest last.ckpt under {tmp_path}/: {new}" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="ckpt_path='nope.ckpt' is not allowed"):
        choose_checkpoint("nope.ckpt", tmp_path)


def test_session_reads_the_run(tmp_path):
    model = tiny()
    ckpt = fake_run(tmp_path, "run", model, bpd=1.25, data="mnist")
    session = DemoSession.open(ckpt)
    assert session.results["test_bpd"] == 1.25 and session.data_config.name == "mnist"
    assert session.num_parameters == sum(p.numel() for p in model.parameters())
    x = preprocess(digit()[None], 8, dequantize=False)
    assert torch.equal(session.model.encode(x)[0][0], model.encode(x)[0][0])  # the same weights
    bare = DemoSession.open(fake_run(tmp_path, "bare", model))
    assert bare.results is None and bare.data_config is None
    with pytest.raises(DemoInputError, match="no test images: this checkpoint's run has no data config"):
        bare.test_image(0)


@pytest.mark.parametrize("key, value, message", [
    ("port", 70000, "port=70000 is not allowed: use an integer in 0..65535"),
    ("host", "", "host='' is not allowed"),
    ("device", "tpu", "device='tpu' is not allowed: use one of auto, cpu, cuda"),
    ("batch_size", 0, "batch_size=0 is not allowed: use a positive integer"),
])
def test_bad_options_are_one_line(key, value, message):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"port": 7860, "host": "127.0.0.1", "device": "auto", "batch_size": 64, key: value})
    with pytest.raises(ConfigError) as err:
        validate_demo(cfg)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_page_shows_errors_as_one_line_and_has_the_five_tabs():
    gr = pytest.importorskip("gradio")
    from glow.demo.page import TAB_NAMES, build_page, shown

    assert TAB_NAMES == ("Sample", "Interpolate", "Reconstruct", "Inpaint", "Model")

    @shown
    def bad():
        raise DemoInputError("the mask is empty: paint")

    @shown
    def broken():
        raise KeyError("x")

    with pytest.raises(gr.Error, match="the mask is empty: paint"):
        bad()
    with pytest.raises(gr.Error, match=r"internal error \(KeyError: 'x'\); details in the server's log"):
        broken()
    page = build_page(session_of(tiny()))
    labels = [block.label for block in page.blocks.values() if type(block).__name__ == "Tab"]
    assert labels == list(TAB_NAMES)
