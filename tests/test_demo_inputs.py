"""The page's inputs at the edges: uploads of another size, bit depth or a decompression bomb, server paths
never shown, blocked file requests answered in one line, an upload size cap, the network warning."""

from __future__ import annotations

import json
import pathlib
import urllib.request

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from glow.data import fit_size
from glow.demo.images import read_upload
from glow.demo.serve import exposure_warning, validate_demo
from glow.demo.session import DemoInputError, DemoSession, redact_paths
from glow.errors import ConfigError
from glow.model import Glow


def test_a_28x28_digit_is_padded_like_the_data_for_a_32x32_model(tmp_path):
    digit = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(digit).save(tmp_path / "digit.png")
    x = read_upload(tmp_path / "digit.png", (1, 32, 32), resize="pad")
    expected = fit_size(torch.from_numpy(digit)[None], 32, "pad")  # what data=mnist (resize: pad) gives
    assert x.shape == (1, 32, 32) and torch.equal(x, expected) and torch.equal(x[0, 2:30, 2:30],
                                                                              torch.from_numpy(digit))
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(DemoInputError) as err:  # pad cannot shrink: one line, no traceback
        read_upload(tmp_path / "big.png", (1, 32, 32), resize="pad")
    assert "big.png is 40x40 pixels" in str(err.value) and "resize=pad" in str(err.value)
    assert read_upload(tmp_path / "big.png", (1, 32, 32), resize="resize").shape == (1, 32, 32)
    with pytest.raises(DemoInputError, match="takes 32x32"):  # no data config: the exact size only
        read_upload(tmp_path / "digit.png", (1, 32, 32))


def test_the_session_fits_uploads_the_way_its_run_data_did():
    model = Glow((1, 8, 8), levels=2, steps=2, hidden_channels=8)
    session = DemoSession(model, pathlib.Path("tiny.ckpt"), {}, None, None, OmegaConf.create({"resize": "pad"}))
    assert session.resize == "pad"


def test_16_bit_and_bomb_uploads(tmp_path):
    values = np.full((8, 8), 40000, np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert int(read_upload(tmp_path / "g16.png", (1, 8, 8)).max()) == round(40000 / 257)
    Image.new("1", (6000, 6000)).save(tmp_path / "bomb.png")
    with pytest.raises(DemoInputError) as err:
        read_upload(tmp_path / "bomb.png", (1, 8, 8), resize="resize")
    assert "bomb.png is not a readable image" in str(err.value) and "decompression bomb" in str(err.value)
    assert "\n" not in str(err.value) and str(tmp_path) not in str(err.value)


def test_server_paths_are_cut_to_their_last_part():
    text = ("no test images (data=mnist is not allowed: mnist not found under /srv/data/sets (download=False)): "
            "served at http://127.0.0.1:7860/ from C:/Users/me/run")
    shown = redact_paths(text)
    assert "/srv/data" not in shown and ".../sets" in shown and "http://127.0.0.1:7860/" in shown
    assert "C:/Users" not in shown and ".../run" in shown


def test_blocked_paths_and_internal_errors_are_one_public_line():
    gradio = pytest.importorskip("gradio")
    from gradio.exceptions import InvalidPathError

    from glow.demo.page import public_error

    blocked = public_error(InvalidPathError("Cannot move /srv/secret/x.png to the gradio cache dir"))
    assert blocked.message == "that file is not allowed: the page reads only files uploaded through it"
    internal = public_error(KeyError("/srv/run/checkpoints/last.ckpt"))
    assert "/srv/run" not in internal.message and internal.message.startswith("internal error (KeyError")
    assert isinstance(blocked, gradio.Error)


def test_serving_the_network_warns_in_one_line_and_auth_is_checked():
    assert exposure_warning("127.0.0.1", None) is None
    warning = exposure_warning("0.0.0.0", None)
    assert warning.startswith("warning: host=0.0.0.0") and "auth=user:password" in warning and "\n" not in warning
    assert "WITHOUT" not in exposure_warning("0.0.0.0", "me:secret")
    base = {"host": "0.0.0.0", "port": 7860, "device": "cpu", "batch_size": 8, "seed": 0, "max_upload_mb": 10}
    validate_demo(OmegaConf.create({**base, "auth": "me:secret"}))
    for bad in ({"auth": "nopassword"}, {"max_upload_mb": 0}, {"seed": -1}):
        with pytest.raises(ConfigError) as err:
            validate_demo(OmegaConf.create({**base, "auth": None, **bad}))
        assert list(bad)[0] in str(err.value) and "secret" not in str(err.value)


@pytest.mark.slow
def test_the_live_page_answers_blocked_paths_in_one_line_and_caps_uploads():
    pytest.importorskip("gradio")
    requests = pytest.importorskip("requests")
    from glow.demo.serve import serve

    model = Glow((1, 8, 8), levels=2, steps=2, hidden_channels=8).eval()
    session = DemoSession(model, pathlib.Path("tiny.ckpt"), {}, None, None, None)
    page = serve(session, "127.0.0.1", 0, block=False, max_upload_mb=1)
    try:
        url = page.local_url
        body = json.dumps({"data": [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}]}).encode()
        request = urllib.request.Request(url + "gradio_api/call/load_upload", data=body,
                                         headers={"Content-Type": "application/json"})
        event = json.loads(urllib.request.urlopen(request, timeout=30).read())["event_id"]
        answer = urllib.request.urlopen(url + f"gradio_api/call/load_upload/{event}", timeout=60).read().decode()
        assert '"error": null' not in answer and "that file is not allowed" in answer
        big = requests.post(url + "gradio_api/upload", files={"files": ("big.png", b"\0" * (2 * 2 ** 20))}, timeout=60)
        assert big.status_code == 413
    finally:
        page.close()
