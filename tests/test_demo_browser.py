"""The web page in a real headless Chromium, on a checkpoint from a real short training run.

    pytest tests/test_demo_browser.py          (needs the extras demo + test and Debian's chromium)

Starts ``python scripts/demo.py`` on a free port, then drives the page like a user: the temperature
slider, an interpolation, a reconstruction, a painted mask whose completions must keep the observed
pixels of the uploaded image, bad uploads and an empty mask (a message on the page, no traceback),
and a screenshot of every tab. The server is stopped at the end, also when the test fails.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 16  # the synthetic folder's images: 16x16 RGB


def _require_browser():
    missing = [name for name in ("gradio", "playwright") if not _importable(name)]
    from scripts.demo_browser import find_chromium

    if find_chromium() is None:
        missing.append("chromium (apt-get install chromium)")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test needs {', '.join(missing)}: make test installs them")
        pytest.skip(f"the browser test needs {', '.join(missing)}")


def _importable(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def _port_open(url: str) -> bool:
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


@pytest.mark.slow
def test_the_page_in_a_real_browser(tmp_path, synthetic_folder):
    _require_browser()
    import train
    from scripts.demo_browser import DemoDriver, browser_page, click_together, demo_server, free_port
    from glow.demo.images import display_factor
    from glow.sampling import load
    from hydra.utils import instantiate
    from tests.conftest import compose_train

    data = ["data=imagefolder", f"data.path={synthetic_folder}", f"data.image_size={SIZE}"]
    trained = train.run(compose_train(tmp_path / "train", data + ["trainer.max_steps=4"]))
    ckpt = trained["last_checkpoint"]
    test_set = instantiate(compose_train(tmp_path / "data", data).data)
    test_set.setup()
    image = lambda i: test_set.test_set[i][0].permute(1, 2, 0).numpy()  # noqa: E731  uint8 H x W x 3

    shots = Path(os.environ.get("GLOW_DEMO_SCREENSHOTS", tmp_path / "screenshots"))
    upload = tmp_path / "digit.png"
    Image.fromarray(image(2)).save(upload)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is a text file, not a PNG\n")
    greyscale = tmp_path / "grey.png"  # another size would be fitted the data's way (resize); channels are not
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(greyscale)

    args = [f"ckpt_path={ckpt}", f"port={free_port()}", "device=cpu"] + data
    with demo_server(args, env={"OMP_NUM_THREADS": "1"}) as server, browser_page() as page:
        assert server.url.startswith("http://127.0.0.1:")
        user = DemoDriver(page, server.url, timeout_s=120)
        assert user.open() == ["Sample", "Interpolate", "Reconstruct", "Inpaint", "Model"]

        # Sample: moving the temperature slider draws a new image, twice
        first, _ = user.drag_slider("sample-temperature", 0.2)
        assert "T=0.3" in user.text("#sample-summary"), user.text("#sample-summary")
        second, _ = user.drag_slider("sample-temperature", 0.6)
        assert second != first and "T=0.9" in user.text("#sample-summary")
        grid = user.download(second[0])
        assert grid.shape == (4 * (SIZE + 1) + 1, 4 * (SIZE + 1) + 1, 3)  # 16 samples, 4 x 4
        user.screenshot(shots / "demo_sample.png")

        # Two users click at once: the queue serves both, each gets the samples of their own seed
        other = DemoDriver(page.context.browser.new_page(), server.url, timeout_s=120)  # a second user
        other.open()
        user.set_number("seed", 1)
        other.set_number("seed", 2)
        mine, theirs = click_together([user, other], "#sample-button", "#sample-output")
        assert mine != theirs and mine != second
        other.page.close()

        # Interpolate test images 0 -> 1 in 5 steps: the end tiles are the test images themselves
        srcs, _ = user.interpolate(0, 1, 5)
        row = user.download(srcs[0])
        assert row.shape == (SIZE + 2, 5 * (SIZE + 1) + 1, 3)
        tile = lambda k: row[1:1 + SIZE, 1 + k * (SIZE + 1): 1 + k * (SIZE + 1) + SIZE]  # noqa: E731
        assert np.array_equal(tile(0), image(0)) and np.array_equal(tile(4), image(1))
        assert not np.array_equal(tile(2), tile(0))
        user.screenshot(shots / "demo_interpolate.png")

        # Reconstruct test image 0: exact
        srcs, _ = user.reconstruct()
        assert np.array_equal(user.download(srcs[-1]), image(0))
        assert f"0 of {SIZE * SIZE} pixels differ" in user.text("#reconstruct-summary")
        user.screenshot(shots / "demo_reconstruct.png")

        # Bad uploads get one clear line on the page
        user.choose_uploads()
        user.upload("reconstruct-upload", not_an_image)
        message = user.error_after(lambda: page.click("#reconstruct-button"))
        assert "notes.png is not an image file" in message and "Traceback" not in message
        user.tab("Interpolate")
        user.choose_uploads()
        user.upload("interpolate-upload-a", greyscale)
        user.upload("interpolate-upload-b", upload)
        message = user.error_after(lambda: page.click("#interpolate-button"))
        assert "grey.png has 1 channel (greyscale) but this model takes 3 channels (colour)" in message

        # Inpaint: an empty mask is refused; then paint a band and complete the uploaded image
        user.load_upload(upload)
        message = user.error_after(lambda: page.click("#inpaint-button"))
        assert "the mask is empty" in message
        side = SIZE * display_factor(SIZE)
        user.paint([[(0.25, 0.5), (0.75, 0.5)]], side)
        srcs, _ = user.complete(steps=5, n=3)
        completions = [user.download(src) for src in srcs]
        assert len(completions) == 3 and all(c.shape == (SIZE, SIZE, 3) for c in completions)
        painted = np.zeros((SIZE, SIZE), bool)   # where the stroke went, with a 3-pixel margin for the brush
        painted[SIZE // 2 - 3: SIZE // 2 + 3, SIZE // 4 - 3: 3 * SIZE // 4 + 3] = True
        original = np.asarray(Image.open(upload))
        for completion in completions:
            assert np.array_equal(completion[~painted], original[~painted])  # observed pixels unchanged
        assert any(not np.array_equal(c[painted], original[painted]) for c in completions)  # the hole was filled
        assert not np.array_equal(completions[0], completions[1])
        assert "the input's, unchanged" in user.text("#inpaint-summary")
        user.screenshot(shots / "demo_inpaint.png")

        # Model: the run's test bits/dim and the parameter count
        user.tab("Model")
        card = user.text("#model-card")
        assert f"{trained['test_bpd']:.4f}" in card
        assert f"{sum(p.numel() for p in load(ckpt).parameters()):,}" in card
        user.screenshot(shots / "demo_model.png")
        assert "Traceback" not in page.content()

    assert server.process.poll() is not None and not _port_open(server.url)  # stopped, nothing left
    with pytest.raises(ProcessLookupError):
        os.killpg(server.process.pid, 0)
    assert not any("demo action failed" in line for line in server.output)  # no unexpected error
