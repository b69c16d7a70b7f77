"""The Gradio page: five tabs (Sample, Interpolate, Reconstruct, Inpaint, Model) over one DemoSession.

Each handler converts the page's values, calls glow.demo.actions, and turns a DemoInputError (or a
ValueError of glow.sampling's own checks) into a gr.Error: the user reads one line on the page,
never a traceback. Anything unexpected is logged with its traceback on the server and shown as one
line too. Clicks are queued (one model call at a time), so concurrent users wait instead of crashing.
"""

from __future__ import annotations

import functools
import logging
import traceback

import gradio as gr
from gradio.exceptions import InvalidPathError
import numpy as np
import torch
from omegaconf import OmegaConf

from glow.demo import actions
from glow.demo.images import from_display, mask_from_layers, read_upload, to_display
from glow.demo.session import DemoInputError, DemoSession, redact_paths
from glow.errors import ConfigError
from glow.sampling.inpaint import ROUTES, pick_route

TAB_NAMES = ("Sample", "Interpolate", "Reconstruct", "Inpaint", "Model")
SOURCES = ("test set", "upload")
log = logging.getLogger("glow.demo")

# images are shown at their own size and enlarged by the browser without smoothing
CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; }
.enlarged img { width: 100%; height: 100%; object-fit: contain; }
"""


def public_error(err: BaseException) -> gr.Error:
    """The one line the page shows for an error: bad input as it is, anything else as its type (the traceback
    goes to the server's log); server paths never shown (redact_paths)."""
    if isinstance(err, gr.Error):
        return gr.Error(redact_paths(err.message))
    if isinstance(err, (DemoInputError, ValueError)) and not isinstance(err, InvalidPathError):
        return gr.Error(redact_paths(str(err).strip().splitlines()[0]) if str(err).strip() else type(err).__name__)
    log.error("demo action failed:\n%s", traceback.format_exc())
    if isinstance(err, InvalidPathError):  # a request naming a file the page did not receive (Gradio blocks it)
        return gr.Error("that file is not allowed: the page reads only files uploaded through it")
    return gr.Error(f"internal error ({type(err).__name__}: {redact_paths(str(err).strip())[:200]}); "
                    f"details in the server's log")


def shown(handler):
    """Bad input -> gr.Error with its one line; anything else -> one line on the page, traceback in the log."""
    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as err:
            raise public_error(err) from None
    return wrapped


class Page(gr.Blocks):
    """gr.Blocks whose every failure reaches the user as one line: Gradio's own checks of a request (a file
    path it blocks, a malformed value) fail before any handler runs, and with show_error=False the user
    saw ``{"error": null}``; show_error=True would show server paths."""

    async def process_api(self, *args, **kwargs):
        try:
            return await super().process_api(*args, **kwargs)
        except Exception as err:
            raise public_error(err) from None


def _reporter(progress: gr.Progress):
    return lambda fraction, desc: progress(fraction, desc=desc)


def _image(session: DemoSession, source: str, index, upload, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 [C, H, W] (and its label, for test images) from the tab's chosen source."""
    if source == "upload":
        return read_upload(upload, session.image_shape, what, session.resize), None
    x, y = session.test_image(index)
    return x, y.reshape(1) if y.dim() == 0 else y[None]


def _labels(*labels):
    return None if any(y is None for y in labels) else torch.cat(labels)


def _source_row(default_index: int, what: str, elem_id: str):
    with gr.Row():
        source = gr.Radio(list(SOURCES), value=SOURCES[0], label=f"{what} from")
        index = gr.Number(value=default_index, precision=0, label="test image index")
        upload = gr.File(label="upload (PNG or JPEG)", type="filepath", height=100, elem_id=elem_id)
    return source, index, upload


def sample_tab(session: DemoSession):
    model = session.model
    with gr.Row():
        temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="temperature",
                                elem_id="sample-temperature")
        n = gr.Slider(1, 64, value=16, step=1, label="n (images)")
        seed = gr.Number(value=0, precision=0, label="seed")
        label = gr.Dropdown(["every class in turn"] + [str(k) for k in range(model.kind.num_classes)],
                            value="every class in turn", label="class", visible=bool(model.kind.labels))
    button = gr.Button("Sample", variant="primary", elem_id="sample-button")
    output = gr.Image(label="samples", type="numpy", format="png", interactive=False, elem_id="sample-output",
                      elem_classes=["pixelated", "enlarged"], height=420)
    summary = gr.Markdown(elem_id="sample-summary")

    @shown
    def run(t, count, s, lab, progress=gr.Progress()):
        lab = None if lab in (None, "every class in turn") else int(lab)
        return actions.sample_images(session, t, count, s, lab, _reporter(progress))

    for event in (button.click, temperature.release):
        event(run, [temperature, n, seed, label], [output, summary])


def interpolate_tab(session: DemoSession):
    source = gr.Radio(list(SOURCES), value=SOURCES[0], label="images from")
    with gr.Row():
        index_a = gr.Number(value=0, precision=0, label="A: test image index")
        upload_a = gr.File(label="A: upload (PNG or JPEG)", type="filepath", height=100, elem_id="interpolate-upload-a")
        index_b = gr.Number(value=1, precision=0, label="B: test image index")
        upload_b = gr.File(label="B: upload (PNG or JPEG)", type="filepath", height=100,
                           elem_id="interpolate-upload-b")
    with gr.Row():
        mode = gr.Radio(["linear", "slerp"], value="linear", label="mode")
        points = gr.Slider(2, actions.MAX_POINTS, value=8, step=1, label="steps (both ends included)")
    button = gr.Button("Interpolate", variant="primary", elem_id="interpolate-button")
    output = gr.Image(label="interpolation", type="numpy", format="png", interactive=False,
                      elem_id="interpolate-output", elem_classes=["pixelated", "enlarged"], height=200)
    summary = gr.Markdown(elem_id="interpolate-summary")

    @shown
    def run(source, ia, ua, ib, ub, m, p, progress=gr.Progress()):
        a, ya = _image(session, source, ia, ua, "image A")
        b, yb = _image(session, source, ib, ub, "image B")
        return actions.interpolation(session, a, b, p, m, _labels(ya, yb), _reporter(progress))

    button.click(run, [source, index_a, upload_a, index_b, upload_b, mode, points], [output, summary])


def reconstruct_tab(session: DemoSession):
    source, index, upload = _source_row(0, "image", "reconstruct-upload")
    button = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct-button")
    with gr.Row():
        original = gr.Image(label="original", type="numpy", format="png", interactive=False,
                            elem_classes=["pixelated", "enlarged"], height=256)
        rebuilt = gr.Image(label="decode(encode(x))", type="numpy", format="png", interactive=False,
                           elem_id="reconstruct-output", elem_classes=["pixelated", "enlarged"], height=256)
    summary = gr.Markdown(elem_id="reconstruct-summary")

    @shown
    def run(src, i, u):
        x, y = _image(session, src, i, u, "image")
        return actions.reconstruction(session, x, y)

    button.click(run, [source, index, upload], [original, rebuilt, summary])


def inpaint_tab(session: DemoSession):
    model = session.model
    try:
        route = pick_route(model, "auto")  # the route `inpaint(method="auto")` takes for this checkpoint
    except ConfigError as err:
        gr.Markdown(f"Inpainting is not available: {err}.", elem_id="inpaint-summary")
        return
    gr.Markdown(f"Load an image, paint the missing region with the brush, then **Complete**: "
                f"completions come from {ROUTES[route].summary} (route `{route}`); the pixels you did not paint stay exactly the input's.")
    with gr.Row():
        index = gr.Number(value=0, precision=0, label="test image index")
        load_button = gr.Button("Load test image", elem_id="inpaint-load")
        upload = gr.File(label="or upload (PNG or JPEG)", type="filepath", height=100, elem_id="inpaint-upload")
    image_state = gr.State(None)   # the unenlarged uint8 image: the observed pixels come from here
    c = session.image_shape[0]
    editor = gr.ImageEditor(label="paint the missing region", type="numpy", sources=(), transforms=(),
                            layers=False, elem_id="inpaint-editor", elem_classes=["pixelated"], height=420,
                            brush=gr.Brush(colors=["#ff3b30"], default_size=16, color_mode="fixed"),
                            eraser=gr.Eraser(default_size=16))
    with gr.Row():
        n = gr.Slider(1, 16, value=8, step=1, label="n (completions)")
        temperature = gr.Slider(0.0, 1.5, value=0.8 if model.kind.image else 1.0, step=0.05, label="temperature")
        steps = gr.Slider(1, 2000, value=max(ROUTES[route].steps, 1), step=1, label="sampler steps",
                          visible=ROUTES[route].steps > 0)
        seed = gr.Number(value=0, precision=0, label="seed")
    button = gr.Button("Complete", variant="primary", elem_id="inpaint-button")
    with gr.Row():
        masked = gr.Image(label="observed (hole grey)", type="numpy", format="png", interactive=False,
                          elem_id="inpaint-masked", elem_classes=["pixelated", "enlarged"], height=200, scale=1)
        gallery = gr.Gallery(label="completions", format="png", columns=8, height=200, object_fit="contain",
                             elem_id="inpaint-output", elem_classes=["pixelated"], scale=4)
    summary = gr.Markdown(elem_id="inpaint-summary")

    def show(x):
        return to_display(x), actions.editor_background(x)

    @shown
    def load_test(i):
        x, _ = session.test_image(i)
        return show(x)

    @shown
    def load_upload(path):
        if path is None:
            return gr.skip(), gr.skip()
        return show(read_upload(path, session.image_shape, resize=session.resize))

    @shown
    def run(state, value, count, t, k, s, progress=gr.Progress()):
        if state is None:
            raise DemoInputError("no image: load a test image or upload one first")
        image = from_display(np.asarray(state), c)
        mask = mask_from_layers((value or {}).get("layers"), session.image_shape)
        return actions.inpainting(session, image, mask, count, t, k, s, _reporter(progress))

    load_button.click(load_test, [index], [image_state, editor])
    upload.upload(load_upload, [upload], [image_state, editor])
    button.click(run, [image_state, editor, n, temperature, steps, seed], [gallery, masked, summary])


def model_tab(session: DemoSession):
    model = session.model
    bpd = (session.results or {}).get("test_bpd")
    results = f"**{bpd:.4f}** (results.json, {session.results.get('test_images', '?')} test images)" \
        if isinstance(bpd, (int, float)) else "not recorded (no results.json beside the checkpoint)"
    kind = {"class": f"class-conditional ({model.kind.num_classes} classes)", "image": "inpainting (c-Glow)"}.get(
        model.kind.name, "unconditional")
    gr.Markdown(elem_id="model-card", value="\n".join([
        f"- **checkpoint:** `{session.display_name}` ({model.family})",
        f"- **test bits/dim:** {results}",
        f"- **parameters:** {session.num_parameters:,}",
        f"- **image shape:** {' x '.join(map(str, session.image_shape))} at {model.n_bits} bits, {kind}",
        "- **test images from:** " + (f"data `{session.data_config.get('name', '?')}`"
                                        if session.data_config is not None else "none (uploads only)"),
    ]))
    config = redact_paths(OmegaConf.to_yaml(session.run_config) if session.run_config is not None else
                          OmegaConf.to_yaml(OmegaConf.create(session.hparams)))
    gr.Code(config, language="yaml", max_lines=24, label="the run's config" if session.run_config is not None
            else "the checkpoint's hyper-parameters", interactive=False)


def build_page(session: DemoSession) -> gr.Blocks:
    # uploads are deleted from Gradio's cache an hour after they arrive (checked every 10 minutes)
    with Page(title=f"Glow: {session.display_name}", delete_cache=(600, 3600)) as page:
        gr.Markdown(f"## Glow on `{session.display_name}`")
        for name, build in zip(TAB_NAMES, (sample_tab, interpolate_tab, reconstruct_tab, inpaint_tab, model_tab)):
            with gr.Tab(name, id=name.lower()):
                build(session)
    return page.queue(default_concurrency_limit=1, max_size=64)
