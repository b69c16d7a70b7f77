"""The web page (Gradio, the optional extra ``demo``): sampling, interpolation, reconstruction,
inpainting and the model's card on any train.py checkpoint. Start it with scripts/demo.py.

Layout: ``session`` (the checkpoint, its run's config and results, test images), ``images`` (uploads,
brush masks, grids), ``actions`` (each tab's work through glow.sampling, no Gradio), ``page`` (the
Gradio Blocks), ``serve`` (checkpoint choice, launch). Only ``page`` and ``serve`` import gradio.
"""

from glow.demo.session import DemoInputError, DemoSession, newest_checkpoint

__all__ = ["DemoInputError", "DemoSession", "newest_checkpoint"]
