"""Starting the page: which checkpoint, the Gradio server on host:port, the URL once it answers."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from glow.config import check_seed, require_values, validate_ckpt_path
from glow.errors import ConfigError, fail, is_int
from glow.demo.session import DemoSession, newest_checkpoint


def choose_checkpoint(ckpt_path, outputs: str | Path = "outputs") -> Path:
    """``ckpt_path`` when given, else the newest last.ckpt under ``outputs`` (saying which), else a
    ConfigError telling how to make one."""
    if ckpt_path is not None:
        validate_ckpt_path(ckpt_path, required=True)
        return Path(str(ckpt_path))
    found = newest_checkpoint(outputs)
    if found is None:
        fail("ckpt_path", None, f"no last.ckpt under {Path(outputs).resolve()}/: train one first with "
                                f"`make train` (or pass ckpt_path=<run>/checkpoints/last.ckpt)")
    print(f"ckpt_path not given: using the newest last.ckpt under {outputs}/: {found}", flush=True)
    return found


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def validate_demo(cfg: DictConfig) -> None:
    require_values(cfg)
    check_seed("seed", cfg.get("seed", 0))
    auth = cfg.get("auth")
    if auth is not None and not (isinstance(auth, str) and ":" in auth and all(auth.split(":", 1))):
        fail("auth", "<hidden>", "use user:password (both non-empty), or null for no login")
    mb = cfg.get("max_upload_mb", 10)
    if not (is_int(mb) and 1 <= mb <= 1024):
        fail("max_upload_mb", mb, "use an integer in 1..1024 (megabytes per uploaded file)")
    port = cfg.get("port")
    if not (is_int(port) and 0 <= port <= 65535):
        fail("port", port, "use an integer in 0..65535 (0: any free port)")
    if not isinstance(cfg.get("host"), str) or not cfg.host:
        fail("host", cfg.get("host"), "use an address to bind, e.g. 127.0.0.1 (this machine only) or 0.0.0.0")
    if cfg.get("device") not in ("cpu", "cuda", "auto"):
        fail("device", cfg.get("device"), "use one of auto, cpu, cuda")
    if not (is_int(cfg.get("batch_size")) and cfg.batch_size >= 1):
        fail("batch_size", cfg.get("batch_size"), "use a positive integer")


def open_session(cfg: DictConfig) -> DemoSession:
    """Validate the config, pick and load the checkpoint (ConfigError with one line on any problem)."""
    import torch

    validate_demo(cfg)
    ckpt = choose_checkpoint(cfg.get("ckpt_path"), cfg.paths.log_dir)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if device == "cuda" and not torch.cuda.is_available():
        fail("device", cfg.device, "CUDA is not available on this machine: use auto or cpu")
    return DemoSession.open(ckpt, cfg.get("data"), device=device, use_ema=cfg.ema, batch_size=cfg.batch_size)


def exposure_warning(host: str, auth: str | None) -> str | None:
    """One line when the page is served beyond this machine (and how to protect it), or None."""
    if host in LOOPBACK:
        return None
    login = "behind the login auth= sets" if auth else "WITHOUT a login (set auth=user:password)"
    return (f"warning: host={host} serves the page to every machine that can reach this one, {login}; "
            f"host=127.0.0.1 keeps it on this machine")


def serve(session: DemoSession, host: str, port: int, block: bool = True, auth: str | None = None,
          max_upload_mb: int = 10):
    """Start the page; prints ``demo ready: <url>`` once the server answers. Returns the Blocks."""
    from glow.demo.page import CSS, build_page

    warning = exposure_warning(host, auth)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    page = build_page(session)
    try:
        page.launch(server_name=host, server_port=port or None, prevent_thread_lock=True, quiet=True,
                    show_error=False, css=CSS, footer_links=[], max_file_size=f"{max_upload_mb}mb",
                    auth=tuple(auth.split(":", 1)) if auth else None)
    except OSError as err:
        raise ConfigError(f"port={port!r} is not allowed: {str(err).strip().splitlines()[0]}") from None
    print(f"demo ready: {page.local_url}", flush=True)
    if block:
        try:
            page.block_thread()
        finally:
            page.close()
    return page


__all__ = ["choose_checkpoint", "open_session", "serve", "validate_demo"]
