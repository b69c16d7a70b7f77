"""Inpainting benchmark: completions of test images with a hole, scored against two baselines.

    python scripts/evaluate_inpainting.py ckpt_path=<c-Glow or plain Glow ckpt> data=mnist mask=center n_images=64
    python scripts/evaluate_inpainting.py ckpt_path=... data=imagefolder data.path=../shared/datasets/cifar10-subset mask_size=16
    python scripts/evaluate_inpainting.py ckpt_path=... method=map        # MAP fill instead of sampling

Writes <run dir>/inpainting.json with, over the first n_images test images:
  psnr_mean_completion  PSNR (dB, [0,1] pixels) in the hole of the mean of the n completions
  psnr_best_of_n        per image the best of its n completions, averaged
  ssim_mean_completion  SSIM of the mean completion vs the original (whole image)
  diversity             mean pairwise L2 distance between completions, in the hole
  observed_max_abs_change  largest change of an observed pixel (uint8 levels): must be 0
  cond_bpd, hole_bpd    c-Glow only: conditional bits/dim of the whole image, and per missing dim
  acceptance_rate       MCMC only
  psnr_mean_fill, psnr_nearest_neighbour (+ their SSIM): fill with the training mean image, or
                        from the training image nearest on the observed pixels
and <run dir>/inpainting.png: per image, original | masked | n completions.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from torchmetrics.functional import structural_similarity_index_measure as ssim
from tqdm import tqdm

from glow.config import ConfigError, check_image_shape, exit_with_config_error, validate_ckpt_path
from glow.sampling.inpaint import METHODS, completions_uint8, inpaint
from glow.masks import MASK_KINDS, make_mask
from glow.model import Glow
from glow.quantize import bits_per_dim, preprocess
from glow.sampling import load, save_grid


def all_images(dataset, limit: int | None = None) -> torch.Tensor:
    """uint8 [N, C, H, W] of a data set (its first ``limit`` items)."""
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        return tensors[0][:limit]
    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    return torch.cat([x for x, _ in DataLoader(dataset, batch_size=256, num_workers=0)])


def psnr(pred: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR over the hole, pixels in [0, 1]."""
    mse = (((pred - target) ** 2) * hole).flatten(1).sum(1) / hole.flatten(1).sum(1).clamp_min(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def baselines(train: torch.Tensor, test: torch.Tensor, hole: torch.Tensor) -> dict[str, torch.Tensor]:
    """Fills of the hole from the training mean image, and from the nearest training image (observed pixels)."""
    train_f, test_f = train.float() / 255, test.float() / 255
    mean_image = train_f.mean(0, keepdim=True)
    nearest = torch.empty_like(test_f)
    observed = 1 - hole
    for i in range(test_f.shape[0]):
        best, best_dist = None, math.inf
        for chunk in train_f.split(8192):
            dist = (((chunk - test_f[i]) ** 2) * observed[i]).flatten(1).sum(1)
            value, index = dist.min(0)
            if value.item() < best_dist:
                best_dist, best = value.item(), chunk[index]
        nearest[i] = best
    return {"mean_fill": test_f * observed + mean_image * hole, "nearest_neighbour": test_f * observed + nearest * hole}


def evaluate(cfg: DictConfig) -> dict:
    try:
        validate_ckpt_path(cfg.ckpt_path)
        if cfg.method not in METHODS:
            raise ConfigError(f"method={cfg.method!r} is not allowed: use one of {', '.join(METHODS)}")
        if cfg.mask not in MASK_KINDS:
            raise ConfigError(f"mask={cfg.mask!r} is not allowed: use one of {', '.join(MASK_KINDS)}")
        for key in ("n_images", "n", "batch_size", "mcmc_steps"):
            if not isinstance(cfg[key], int) or cfg[key] < 1:
                raise ConfigError(f"{key}={cfg[key]!r} is not allowed: use a positive integer")
        datamodule = instantiate(cfg.data)
    except (ConfigError, ValueError) as err:
        exit_with_config_error(err)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    model = load(cfg.ckpt_path, use_ema=cfg.ema).to(device)
    n_bits = model.n_bits
    datamodule.prepare_data()
    datamodule.setup("test")
    try:
        check_image_shape(datamodule.image_shape, model.image_shape, cfg.data.name)
    except ConfigError as err:
        exit_with_config_error(err)
    test = all_images(datamodule.test_set, cfg.n_images)
    h, w = test.shape[-2:]
    fraction = cfg.mask_size / h if cfg.mask == "center" and cfg.mask_size else cfg.center_fraction
    mask = make_mask(cfg.mask, test.shape[0], (h, w), center_fraction=fraction, pixel_rate=cfg.pixel_rate,
                     generator=torch.Generator().manual_seed(cfg.seed))
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)

    start, outputs, accept, cond_bpd, hole_bpd = time.time(), [], [], [], []
    batches = list(zip(test.split(cfg.batch_size), mask.split(cfg.batch_size)))
    for images, m in tqdm(batches, desc=f"inpainting ({cfg.method})", unit="batch"):
        images, m = images.to(device), m.to(device)
        x = preprocess(images, n_bits, dequantize=False)
        result = inpaint(model, x, m, n=cfg.n, method=cfg.method, temperature=cfg.inpaint_temperature, steps=cfg.mcmc_steps,
                         step_size=cfg.step_size, map_steps=cfg.map_steps, init=cfg.init, generator=generator)
        outputs.append(completions_uint8(result, images, m, n_bits).cpu())
        if result.acceptance_rate is not None:
            accept.append(result.acceptance_rate)
        if result.method == "cglow":
            with torch.no_grad():
                bpd = bits_per_dim(model.log_prob(preprocess(images, n_bits, generator=None),
                                                  Glow.make_condition(x, m)), model.num_dims, n_bits)
            cond_bpd.append(bpd.cpu())
            missing = (m.flatten(1).sum(1) * images.shape[1]).clamp_min(1)
            hole_bpd.append((bpd * model.num_dims / missing).cpu())
    completions = torch.cat(outputs)  # [N, n, C, H, W] uint8
    seconds = time.time() - start

    hole = mask.expand_as(test.float())
    target = test.float() / 255
    comp = completions.float() / 255
    mean_completion = comp.mean(1)
    per_completion = torch.stack([psnr(comp[:, k], target, hole) for k in range(cfg.n)], 1)
    pairs = list(itertools.combinations(range(cfg.n), 2))
    diversity = (torch.stack([(((comp[:, i] - comp[:, j]) * hole) ** 2).flatten(1).sum(1).sqrt() for i, j in pairs],
                             1).mean().item() if pairs else 0.0)
    observed = (hole == 0).unsqueeze(1).expand_as(completions)
    change = (completions.int() - test.unsqueeze(1).int()).abs()[observed]
    results = {
        "method": result.method, "data": cfg.data.name, "mask": cfg.mask,
        "hole_pixels": int(mask[0].sum()), "n_images": int(test.shape[0]), "n": cfg.n,
        "psnr_mean_completion": psnr(mean_completion, target, hole).mean().item(),
        "psnr_best_of_n": per_completion.max(1).values.mean().item(),
        "ssim_mean_completion": ssim(mean_completion, target, data_range=1.0).item(),
        "diversity": diversity,
        "observed_max_abs_change": int(change.max()) if change.numel() else 0,
        "seconds": round(seconds, 1),
    }
    if accept:
        results["acceptance_rate"] = sum(accept) / len(accept)
    if cond_bpd:
        results["cond_bpd"] = torch.cat(cond_bpd).mean().item()
        results["hole_bpd"] = torch.cat(hole_bpd).mean().item()
    for name, fill in baselines(all_images(datamodule.train_set), test, hole).items():
        results[f"psnr_{name}"] = psnr(fill, target, hole).mean().item()
        results[f"ssim_{name}"] = ssim(fill, target, data_range=1.0).item()

    out = Path(cfg.paths.output_dir)
    (out / "inpainting.json").write_text(json.dumps(results, indent=2) + "\n")
    k = min(cfg.grid_images, test.shape[0])
    masked = torch.where(hole[:k].bool(), torch.full_like(target[:k], 0.5), target[:k])
    rows = torch.cat([target[:k].unsqueeze(1), masked.unsqueeze(1), comp[:k]], 1)  # [k, 2 + n, C, H, W]
    save_grid(rows.flatten(0, 1) - 0.5, out / "inpainting.png", n_bits=8, nrow=2 + cfg.n)
    print(json.dumps(results, indent=2))
    print(f"written to {out / 'inpainting.json'} and {out / 'inpainting.png'}")
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate_inpainting")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
