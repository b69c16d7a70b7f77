"""Driving the page in a real headless Chromium (Playwright's Python API on the system's browser).

Used by tests/test_demo_browser.py (as ``scripts.demo_browser``) and scripts/demo_screenshots.py (as
``demo_browser``, its neighbour), so the README's screenshots and
timings come from the same clicks the test makes. ``demo_server`` runs ``python scripts/demo.py`` in
its own process group and always kills the group on exit; ``DemoDriver`` clicks like a user and
measures each action from the click until its new image is on the page.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """$GLOW_CHROMIUM, else the first Chromium on PATH (Debian's package is `chromium`)."""
    given = os.environ.get("GLOW_CHROMIUM")
    if given:
        return given
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    output: list[str]   # what the server printed so far (stdout and stderr)


@contextmanager
def demo_server(args: Sequence[str], timeout: float = 240.0, env: dict | None = None) -> Iterator[Server]:
    """``python scripts/demo.py *args`` until the block exits; yields it once it printed its URL.

    The server runs in a new session (its own process group), killed with everything it started on
    exit, whether the block succeeded or failed.
    """
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "demo.py"), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(
                                filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})  # this checkout's glow
    lines: list[str] = []
    # a SIGTERM (timeout, CI) must still run the cleanup below, so it becomes an exception here
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) \
        if threading.current_thread() is threading.main_thread() else None
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            url = next((line.split("demo ready:", 1)[1].strip() for line in list(lines) if "demo ready:" in line), None)
            if url is None and proc.poll() is not None:
                reader.join(5)
                raise RuntimeError(f"scripts/demo.py exited with {proc.returncode}:\n{''.join(lines)[-3000:]}")
            if url is None and time.monotonic() > deadline:
                raise TimeoutError(f"scripts/demo.py not ready after {timeout:.0f} s:\n{''.join(lines)[-3000:]}")
            time.sleep(0.1)
        yield Server(url, proc, lines)
    finally:
        stop(proc)
        reader.join(5)
        proc.stdout.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def browser_page(width: int = 1280, height: int = 1000) -> Iterator[object]:
    """A fresh headless Chromium page (the system's browser: Playwright's own download is not needed)."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        raise RuntimeError("no Chromium found: apt-get install chromium (or set GLOW_CHROMIUM)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


class DemoDriver:
    """A user on the page: every action returns what appeared and the seconds from click to image."""

    def __init__(self, page, url: str, timeout_s: float = 300.0):
        self.page, self.url, self.timeout_ms = page, url, timeout_s * 1000
        page.set_default_timeout(self.timeout_ms)

    def open(self) -> list[str]:
        self.page.goto(self.url)
        self.page.wait_for_selector("#sample-button")
        return [tab.inner_text().strip() for tab in self.page.get_by_role("tab").all()]

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name, exact=True).click()

    def _srcs(self, selector: str) -> list[str]:
        return [img.get_attribute("src") or "" for img in self.page.locator(f"{selector} img").all()]

    def _click_and_wait(self, selector: str, click) -> tuple[list[str], float]:
        """Run ``click`` and wait until the images under ``selector`` change; -> new srcs, seconds.
        An error message on the page instead fails at once, with its text."""
        before = self._srcs(selector)
        self.dismiss_messages()
        toasts, seen = self.page.locator(".toast-body"), 0
        start = time.perf_counter()
        click()
        self.page.wait_for_function(
            """([sel, old, seen]) => {
                 if (document.querySelectorAll('.toast-body').length > seen) return true;
                 const imgs = [...document.querySelectorAll(sel + ' img')];
                 const s = imgs.map(i => i.src);
                 return s.length > 0 && JSON.stringify(s) !== JSON.stringify(old) && imgs.every(i => i.complete); }""",
            arg=[selector, before, seen], timeout=self.timeout_ms)
        seconds = time.perf_counter() - start
        if toasts.count() > seen:
            raise AssertionError(f"the page says: {toasts.nth(seen).inner_text()}")
        return self._srcs(selector), seconds

    def download(self, src: str) -> np.ndarray:
        """The image file behind an <img> (what the download button saves), as a numpy array."""
        response = self.page.request.get(src)
        assert response.ok, f"GET {src}: {response.status}"
        return np.asarray(Image.open(io.BytesIO(response.body())))

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector).strip()

    def _set_number(self, label: str, value) -> None:
        box = self.page.get_by_role("tabpanel").get_by_label(label, exact=True)
        box.fill(str(value))
        box.press("Enter")

    def drag_slider(self, elem_id: str, to_fraction: float) -> tuple[list[str], float]:
        """Drag a slider's handle with the mouse to ``to_fraction`` of its track; -> new image srcs, seconds."""
        track = self.page.locator(f"#{elem_id} input[type=range]")
        box = track.bounding_box()
        value = float(track.input_value())
        low, high = float(track.get_attribute("min")), float(track.get_attribute("max"))
        y = box["y"] + box["height"] / 2
        x0 = box["x"] + box["width"] * (value - low) / (high - low)

        def drag():
            self.page.mouse.move(x0, y)
            self.page.mouse.down()
            self.page.mouse.move(box["x"] + box["width"] * to_fraction, y, steps=8)
            self.page.mouse.up()
        return self._click_and_wait("#sample-output", drag)

    def set_number(self, label: str, value) -> None:
        self._set_number(label, value)

    def sample(self) -> tuple[list[str], float]:
        self.tab("Sample")
        return self._click_and_wait("#sample-output", lambda: self.page.click("#sample-button"))

    def choose_uploads(self) -> None:
        self.page.get_by_role("tabpanel").get_by_label("upload", exact=True).check()

    def upload(self, elem_id: str, path: str | Path) -> None:
        """Put a file into an upload box (as a user's file dialog would)."""
        self.page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
        self.page.wait_for_timeout(500)

    def interpolate(self, index_a: int | None = None, index_b: int | None = None, steps: int | None = None
                    ) -> tuple[list[str], float]:
        self.tab("Interpolate")
        if index_a is not None:
            self._set_number("A: test image index", index_a)
        if index_b is not None:
            self._set_number("B: test image index", index_b)
        if steps is not None:
            self._set_number("number input for steps (both ends included)", steps)
        return self._click_and_wait("#interpolate-output", lambda: self.page.click("#interpolate-button"))

    def reconstruct(self) -> tuple[list[str], float]:
        self.tab("Reconstruct")
        return self._click_and_wait("#reconstruct-output", lambda: self.page.click("#reconstruct-button"))

    def load_upload(self, path: str | Path) -> None:
        """Upload an image into the Inpaint tab's editor."""
        self.tab("Inpaint")
        self.upload("inpaint-upload", path)
        self.page.wait_for_timeout(2500)

    def load_test_image(self, index: int = 0) -> None:
        self.tab("Inpaint")
        self._set_number("test image index", index)
        self.page.click("#inpaint-load")
        self.page.wait_for_timeout(3000)

    def paint(self, strokes: Sequence[Sequence[tuple[float, float]]], side: int) -> None:
        """Brush strokes over the editor's image (``side`` pixels square, as loaded); points are fractions
        (x, y) of the image's width and height."""
        box = self.image_box(side)
        for stroke in strokes:
            (x, y), rest = stroke[0], stroke[1:]
            self.page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
            self.page.mouse.down()
            for x, y in rest:
                self.page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=4)
            self.page.mouse.up()
        self.page.wait_for_timeout(300)

    def image_box(self, side: int) -> dict:
        """Where the editor shows its image of ``side`` x ``side`` pixels: centred on the canvas, at the
        zoom its toolbar reads ("140%"), in page coordinates."""
        box = self.page.locator("#inpaint-editor canvas").first.bounding_box()
        zoom = float(self.page.inner_text("#inpaint-editor .zoom-number").strip().rstrip("%")) / 100
        size = side * zoom
        return {"x": box["x"] + (box["width"] - size) / 2, "y": box["y"] + (box["height"] - size) / 2,
                "width": size, "height": size}

    def complete(self, steps: int | None = None, n: int | None = None) -> tuple[list[str], float]:
        if steps is not None:
            self._set_number("number input for sampler steps", steps)
        if n is not None:
            self._set_number("number input for n (completions)", n)
        return self._click_and_wait("#inpaint-output", lambda: self.page.click("#inpaint-button"))

    def dismiss_messages(self) -> None:
        """Close every message on the page (they also vanish by themselves after a while)."""
        for close in self.page.locator(".toast-close").all():
            if close.is_visible():
                close.click()
        self.page.wait_for_function("() => document.querySelectorAll('.toast-body').length === 0")

    def error_after(self, click) -> str:
        """Run ``click`` and return the text of the error message the page shows."""
        self.dismiss_messages()
        click()
        first = self.page.locator(".toast-body").first
        first.wait_for(state="visible")
        return first.inner_text()

    def screenshot(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=True)
        return path


def click_together(users: Sequence[DemoDriver], button: str, output: str) -> list[list[str]]:
    """Several users click ``button`` at once; waits until each page shows a new image under ``output``."""
    before = [user._srcs(output) for user in users]
    for user in users:
        user.page.click(button)
    for user, old in zip(users, before):
        user.page.wait_for_function(
            """([sel, old]) => { const s = [...document.querySelectorAll(sel + ' img')].map(i => i.src);
                 return s.length > 0 && JSON.stringify(s) !== JSON.stringify(old); }""",
            arg=[output, old], timeout=user.timeout_ms)
    return [user._srcs(output) for user in users]

