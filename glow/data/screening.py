"""Screening an image folder before training: every file of the train and test splits is opened (header
only, in threads, with a progress bar for large folders), and its size is checked against the data
module's size rule.

Unreadable files (broken, empty, a decompression bomb, float pixels) are listed (count and first
names) and skipped; too many of them, or a split left empty, stop the run before any step. A file of
a size the run cannot use (``data.image_size=null`` and another size than the others, or too large
to pad, or too small to crop) stops it too, by name. Why up front: a bad file found by the loader
surfaces as a traceback hours into a run, or (in the test split) after all training, losing the
results. The probing threads are daemons, so Ctrl-C stops a screening stuck on a stalled file system.
"""

from __future__ import annotations

import os
import queue
import threading
import warnings
from typing import Callable, Sequence

from PIL import Image

from glow.data.images import mode_problem
from glow.errors import ConfigError

PROGRESS_FROM = 2000  # files; smaller folders are screened in well under a second
SHOW = 5  # names listed in a warning or error
Size = tuple[int, int]  # (height, width)


def probe(path: str) -> Size | str:
    """(height, width) from the file's header, or why it cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # mode_problem checks the size
            with Image.open(path) as im:
                problem = mode_problem(im.mode, im.size)
                if problem is not None:
                    return problem
                w, h = im.size
                return h, w
    # decoders raise OSError, SyntaxError, ValueError, zlib.error...: every one means "unreadable"
    except Exception as err:
        text = str(err).splitlines()[0].replace(repr(path), "the file").replace(path, "the file") if str(err) else ""
        return f"{type(err).__name__}: {text}".rstrip(": ")


def next_done(done: queue.SimpleQueue) -> int:
    """The next finished index. Waits in short slices: the kernel may deliver Ctrl-C's signal to a worker
    stuck in open(), and a main thread blocked for good would then never run Python's handler."""
    while True:
        try:
            return done.get(timeout=0.1)
        except queue.Empty:
            continue


def map_in_daemon_threads(fn: Callable, items: Sequence, workers: int, tick: Callable[[], None] = lambda: None
                          ) -> list:
    """[fn(item) for item in items] in daemon threads: unlike a ThreadPoolExecutor, a thread stuck in a
    system call can neither block Ctrl-C nor the interpreter's exit."""
    results: list = [None] * len(items)
    todo: queue.SimpleQueue = queue.SimpleQueue()
    done: queue.SimpleQueue = queue.SimpleQueue()
    for i in range(len(items)):
        todo.put(i)

    def work():
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[i] = fn(items[i])
            except BaseException as err:  # handed to the main thread, raised there
                results[i] = err
            done.put(i)

    for _ in range(min(workers, len(items))):
        threading.Thread(target=work, daemon=True).start()
    for _ in range(len(items)):
        i = next_done(done)
        if isinstance(results[i], BaseException):
            raise results[i]
        tick()
    return results


def probe_all(paths: Sequence[str], what: str = "images") -> list[Size | str]:
    workers = min(32, 4 * (os.cpu_count() or 1))  # I/O-bound: threads, several per core
    if len(paths) < PROGRESS_FROM:
        return map_in_daemon_threads(probe, paths, workers)
    from tqdm.auto import tqdm

    with tqdm(total=len(paths), desc=f"checking {what}", unit="file") as bar:
        return map_in_daemon_threads(probe, paths, workers, lambda: bar.update(1))


def check_sizes(sizes: dict[str, Size], image_size: int | None, resize: str) -> None:
    """Every image can be brought to the run's size the chosen way, or a one-line ConfigError naming the
    first that cannot (and how many cannot)."""
    if not sizes:
        return
    first_path, first = next(iter(sizes.items()))
    if image_size is None:
        bad = [p for p, hw in sizes.items() if hw != first]
        rule = f"data.image_size=null needs every image at the first one's size ({first[0]}x{first[1]}, " \
               f"{first_path})"
        fix = "set data.image_size (with data.resize=resize, pad or center_crop)"
        key, value = "data.image_size", None
    elif resize == "pad":
        bad = [p for p, (h, w) in sizes.items() if h > image_size or w > image_size]
        rule = f"data.resize='pad' cannot shrink an image to {image_size}x{image_size}"
        fix = "use data.resize=resize, or a larger data.image_size"
        key, value = "data.image_size", image_size
    elif resize == "center_crop":
        bad = [p for p, (h, w) in sizes.items() if h < image_size or w < image_size]
        rule = f"data.resize='center_crop' cannot grow an image to {image_size}x{image_size}"
        fix = "use data.resize=resize, or a smaller data.image_size"
        key, value = "data.image_size", image_size
    else:
        return
    if bad:
        h, w = sizes[bad[0]]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ConfigError(f"{key}={value!r} is not allowed: {bad[0]} is {h}x{w}{more}, "
                          f"and {rule}: {fix}, or remove the file")


def screen(splits: dict[str, list[str]], max_bad_fraction: float, where: str
           ) -> tuple[dict[str, list[int]], dict[str, Size]]:
    """Probe every file of every split; returns the indices of the readable files per split and the size
    of every readable file (the first training image first). Raises ValueError (one line) when a split is
    empty or the unreadable share exceeds ``max_bad_fraction``; otherwise warns and skips the bad files."""
    for split, paths in splits.items():
        if not paths:
            raise ValueError(f"data.path={where!r}: the {split} split holds no images")
    results = {split: probe_all(paths, f"{split} images") for split, paths in splits.items()}
    bad = [(p, r) for split, paths in splits.items() for p, r in zip(paths, results[split]) if isinstance(r, str)]
    total = sum(len(p) for p in splits.values())
    if bad:
        names = ", ".join(f"{p} ({r})" for p, r in bad[:SHOW]) + (", ..." if len(bad) > SHOW else "")
        text = f"{len(bad)} of {total} image files under {where} are unreadable: {names}"
        if len(bad) > max_bad_fraction * total:
            raise ValueError(f"data.max_bad_fraction={max_bad_fraction} is exceeded: {text}; fix or remove them, "
                             f"or raise data.max_bad_fraction")
        warnings.warn(text + "; they are skipped", stacklevel=2)
    keep = {split: [i for i, r in enumerate(results[split]) if not isinstance(r, str)] for split in splits}
    for split, kept in keep.items():
        if not kept:
            raise ValueError(f"data.path={where!r}: the {split} split holds no readable images")
    sizes = {paths[i]: results[split][i] for split, paths in splits.items() for i in keep[split]}
    return keep, sizes
