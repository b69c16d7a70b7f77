"""sample.py's task=inpaint: rows of original | masked | n completions, through glow.sampling.inpaint's
routes; with ``mask_image`` also the completions at each image's original size."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from glow.errors import fail
from glow.masks import make_mask
from glow.quantize import preprocess
from glow.sampling.batched import model_device
from glow.sampling.diagnostics import describe
from glow.sampling.inpaint import InpaintOptions, completions_uint8, inpaint, pick_route, planned_steps
from glow.sampling.task_inputs import read_user_image, real_images
from glow.sampling.user_mask import read_mask, save_completions, to_model_size, to_original_size


def _user_images_and_masks(cfg, model) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """task=inpaint with mask_image: the originals, their masks, and both at the model's size."""
    c, h, w = model.image_shape
    pad = cfg.data.get("resize", "resize") == "pad"
    originals, masks, xs, ms = [], [], [], []
    for path in cfg.images:
        image = read_user_image("images", path, c)
        try:
            mask = read_mask(str(cfg.mask_image), tuple(image.shape[-2:]))
        except ValueError as err:
            fail("mask_image", cfg.mask_image, str(err))
        x, m = to_model_size(image, mask, (h, w), pad)
        originals.append(image), masks.append(mask), xs.append(x), ms.append(m)
    return originals, masks, torch.stack(xs), torch.stack(ms)


def task_inpaint(cfg, model, n, generator):
    user_mask = cfg.get("mask_image") is not None
    if user_mask:
        originals, masks, x_uint8, mask = _user_images_and_masks(cfg, model)
    else:
        x_uint8, _ = real_images(cfg, model, cfg.inpaint_images)
        h, w = x_uint8.shape[-2:]
        fraction = cfg.mask_size / h if cfg.mask == "center" and cfg.mask_size else cfg.center_fraction
        mask = make_mask(cfg.mask, x_uint8.shape[0], (h, w), center_fraction=fraction, pixel_rate=cfg.pixel_rate,
                         generator=generator)
    device = model_device(model)
    x = preprocess(x_uint8, model.n_bits, dequantize=False).to(device)
    method = pick_route(model, cfg.method)
    total = planned_steps(method, InpaintOptions(steps=cfg.mcmc_steps, map_steps=cfg.map_steps))
    with tqdm(total=total, desc=method, unit="step", disable=total == 0) as bar:
        result = inpaint(model, x, mask.to(device), n=n, method=method, temperature=cfg.inpaint_temperature,
                         steps=cfg.mcmc_steps, step_size=cfg.step_size, map_steps=cfg.map_steps, init=cfg.init,
                         generator=generator, progress=lambda step: bar.update(1))
    filled = completions_uint8(result, x_uint8, mask, model.n_bits)  # observed pixels bit-exact
    written = []
    if user_mask:  # the completions at the original size; the user's observed pixels untouched
        pad = cfg.data.get("resize", "resize") == "pad"
        for path, original, m, completions in zip(cfg.images, originals, masks, filled):
            back = to_original_size(completions, original, m, pad)
            written += save_completions(back, Path(str(path)).stem, Path(cfg.paths.output_dir))
    masked = torch.where(mask.expand_as(x_uint8).bool(), torch.full_like(x_uint8, 128), x_uint8)
    rows = torch.cat([x_uint8.unsqueeze(1), masked.unsqueeze(1), filled], 1).flatten(0, 1)
    images = preprocess(rows, model.n_bits, dequantize=False)
    rate = describe(result.acceptance_rate, result.stats)
    rate = f", MCMC {rate}" if rate else ""
    where = f"; {len(written)} completions at the original size in {written[0].parent}" if written else ""
    return images, n + 2, (f"{x_uint8.shape[0]} rows of original | masked | {n} completions "
                           f"({result.method}, mask={cfg.mask_image if user_mask else cfg.mask}{rate}{where})")
