"""What users do with a trained model, as pure functions on any family's model (glow.density.DensityModel),
shared by sample.py, the training callbacks and the web page.

All images are in model space ([-0.5, 0.5)) unless named ``*_uint8``; ``save_grid`` turns them into
PNGs through glow.quantize. Everything here runs in float32, whatever precision training used.

The tasks of sample.py (``glow.sampling.tasks`` turns its config into these calls; each returns a
grid's images in row-major order, on the CPU; functions named ``*_latents`` work on lists of per-level latents, finest first, as ``Glow.encode`` gives):

    sample(model, n, temperature)                       n images
    temperature_sweep(model, temperatures, n)           one row per temperature, same noise in every row
    class_grid(model, classes, n, temperature)          one row per class, same noise in every row
    interpolate(model, x_a, x_b, points, mode)          one row per pair: encode, interpolate every level, decode
    reconstruction_pairs(model, x)                      original, reconstruction, original, ...
    attribute_direction(model, x, has_attribute)        mean latent with minus mean latent without
    manipulate(model, x, direction, scales)             one row per image: decode(z + s * direction)

All of them draw ``batch_size`` images at a time (so n is not bounded by memory), with autocast off
and no gradients. Random draws come from an optional CPU ``generator``, so a seed gives the same
images on CPU and GPU (for a given batch_size). Non-finite images are returned as they are: callers
report them (``blank_nonfinite``) before writing a grid.

Layout: ``load`` (checkpoints -> any family's model), ``batched`` (fp32 inference in batches, encode/decode),
``grids`` (samples, temperature rows, class rows, reconstructions, PNG writing: the one API of
sample.py and the training callback), ``interpolate``, ``manipulate``, ``inpaint`` (the table of
inpainting routes: ``cglow_route``, ``latent``, ``pixel_mcmc``), and ``tasks`` (the table of sample.py's
tasks on a config: ``task_grids``, ``task_manipulate``, ``task_inpaint``).
"""

from glow.sampling.batched import decode_latents, encode_latents, inference_fp32, model_device, standard_noise
from glow.sampling.grids import (blank_nonfinite, class_grid, grid_shape, reconstruct, reconstruction_grid,
                                 reconstruction_pairs, sample, save_grid, temperature_sweep)
from glow.sampling.inpaint import METHODS, InpaintResult, completions_uint8, inpaint
from glow.sampling.interpolate import INTERPOLATION_MODES, interpolate, interpolate_latents, interpolation_weights
from glow.sampling.load import load, load_checkpoint
from glow.sampling.manipulate import attribute_direction, manipulate

__all__ = [
    "INTERPOLATION_MODES", "METHODS", "InpaintResult", "attribute_direction", "blank_nonfinite", "class_grid",
    "completions_uint8", "decode_latents", "encode_latents", "grid_shape", "inference_fp32", "inpaint",
    "interpolate", "interpolate_latents", "interpolation_weights", "load", "load_checkpoint", "manipulate",
    "model_device", "reconstruct", "reconstruction_grid", "reconstruction_pairs", "sample", "save_grid",
    "standard_noise", "temperature_sweep",
]
