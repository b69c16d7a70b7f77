"""Screenshots of every tab of the web page and the time from click to image, on a real checkpoint.

    python scripts/demo_screenshots.py ckpt_path=outputs/mnist/<run>/checkpoints/last.ckpt out=docs

Starts scripts/demo.py on a free port, drives it in headless Chromium with the browser test's
machinery (scripts/demo_browser.py), saves docs/demo_<tab>.png and docs/demo_timings.json, and prints the
seconds from each click until its image is on the page. Needs the extras demo and browser and
Debian's chromium. Other options: steps=<sampler steps for Inpaint, default: the sampler's>
n_inpaint=8 index=0 (the test image to inpaint) device=cpu.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from demo_browser import DemoDriver, browser_page, demo_server, free_port  # scripts/: the script's own directory
from glow.demo.images import display_factor

DEFAULTS = {"ckpt_path": None, "out": "docs", "steps": None, "n_inpaint": 8, "index": 0, "device": "cpu"}


def main(argv: list[str]) -> dict:
    cfg = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_cli(argv))
    if cfg.ckpt_path is None or not Path(cfg.ckpt_path).is_file():
        raise SystemExit(f"config error: ckpt_path={cfg.ckpt_path!r} is not allowed: give a train.py checkpoint")
    out = Path(cfg.out)
    timings = Timings()
    with demo_server([f"ckpt_path={cfg.ckpt_path}", f"port={free_port()}", f"device={cfg.device}"]) as server, \
            browser_page() as page:
        user = DemoDriver(page, server.url, timeout_s=600)
        user.open()
        timings["sample (button, 16 images)"] = user.sample()[1]
        timings["sample (temperature slider, 16 images)"] = user.drag_slider("sample-temperature", 0.6)[1]
        user.screenshot(out / "demo_sample.png")
        timings["interpolate (8 steps)"] = user.interpolate(0, 1, 8)[1]
        user.screenshot(out / "demo_interpolate.png")
        timings["reconstruct"] = user.reconstruct()[1]
        user.screenshot(out / "demo_reconstruct.png")
        shape = server_image_side(user)
        user.load_test_image(cfg.index)
        user.paint([[(0.2, 0.45), (0.8, 0.45)], [(0.2, 0.55), (0.8, 0.55)]], shape * display_factor(shape))
        key = f"inpaint ({cfg.n_inpaint} completions, {cfg.steps or 'default'} sampler steps)"
        timings[key] = user.complete(steps=cfg.steps, n=cfg.n_inpaint)[1]
        timings["inpaint summary"] = user.text("#inpaint-summary")
        user.screenshot(out / "demo_inpaint.png")
        user.tab("Model")
        user.screenshot(out / "demo_model.png")
    (out / "demo_timings.json").write_text(json.dumps({k: round(v, 2) if isinstance(v, float) else v
                                                       for k, v in timings.items()}, indent=2) + "\n")
    return timings


class Timings(dict):
    """Prints each figure as it comes (a run that stops half-way still says what it measured)."""

    def __setitem__(self, name, value):
        super().__setitem__(name, value)
        print(f"{name}: {value:.2f} s" if isinstance(value, float) else f"{name}: {value}", flush=True)


def server_image_side(user: DemoDriver) -> int:
    """The model's image side, as the Model tab states it ("image shape: 1 x 32 x 32 ...")."""
    user.tab("Model")
    card = user.text("#model-card")
    shape = card.split("image shape:")[1].split(" at ")[0]
    return int(shape.split("x")[-1].strip())


if __name__ == "__main__":
    main(sys.argv[1:])
