"""The web page: sample, interpolate, reconstruct and inpaint with any train.py checkpoint, in a browser.

    make demo                                                        # installs the demo extra, newest outputs/**/last.ckpt
    python scripts/demo.py ckpt_path=outputs/mnist/<run>/checkpoints/last.ckpt
    python scripts/demo.py ckpt_path=... port=7860 host=127.0.0.1    # the defaults; host=0.0.0.0 serves the network
    python scripts/demo.py ckpt_path=... data=imagefolder data.path=cifar10-subset   # test images of a run without its config

Needs the optional extra: pip install -e '.[demo]'. Prints ``demo ready: http://127.0.0.1:7860/`` once
the page answers; Ctrl-C stops it. A bad option stops it with one line, ``config error: ...``, exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from glow.cli import hydra_entry
from glow.errors import ConfigError, exit_with_config_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    try:
        import gradio  # noqa: F401
    except ImportError:
        exit_with_config_error("the web page needs gradio: pip install -e '.[demo]' (or make demo)")
    from glow.demo.serve import open_session, serve

    try:
        session = open_session(cfg)
        serve(session, cfg.host, cfg.port, auth=cfg.get("auth"), max_upload_mb=cfg.get("max_upload_mb", 10))
    except ConfigError as err:
        exit_with_config_error(err)


if __name__ == "__main__":
    hydra_entry(main, "demo", Path(__file__).resolve().parents[1] / "conf")  # --help; composition errors: one line
