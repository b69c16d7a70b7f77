"""Inpainting benchmark: completions of test images with a hole, by every route, against two baselines.

    python scripts/evaluate_inpainting.py ckpt_path=<c-Glow ckpt> data=mnist n_images=200 json=cglow.json
    python scripts/evaluate_inpainting.py ckpt_path=<plain Glow ckpt> "method=[latent,mcmc]" n_images=64
    python scripts/evaluate_inpainting.py ckpt_path=... data=imagefolder data.path=cifar10-subset mask_size=16

``method`` is one route or a list (auto | cglow | latent | mcmc | map). Writes ONE results file,
<run dir>/inpainting.json (and a copy at ``json=PATH`` when given), holding over the first n_images
test images, for every route and for the baselines (mean_fill: the training mean image;
nearest_neighbour: the training image nearest on the observed pixels):
  psnr_mean_completion  PSNR (dB, [0,1] pixels) in the hole of the mean of the n completions
  psnr_best_of_n        per image the best of its n completions, averaged
  ssim_mean_completion  SSIM of the mean completion vs the original (whole image)
  diversity             mean pairwise L2 distance between completions, in the hole
  observed_max_abs_change  largest change of an observed pixel (uint8 levels): must be 0
  seconds, seconds_per_8_images  wall time of the route (completions only)
  cglow: cond_bpd_upper_bound, hole_bpd_upper_bound: -log2 p(x | x_obs) of the dequantised image per
        dim, and all of it per MISSING dim. Upper bounds of the hole's conditional bits/dim, because
        the model also spends (few) bits on the observed pixels it is given and the dequantised
        density bounds the discrete one; labelled so.
  latent, mcmc: acceptance_rate, and for latent the ESS / autocorrelation of each chain's hole mean
The c-Glow sampling temperature (``inpaint_temperature=auto``, the default) is chosen on
the VALIDATION split (``val_images`` images, grid ``temperature_grid``) by PSNR of the mean
completion, never on test; the sweep is in the results. The MCMC routes use T = 1 (the model's own
conditional) unless a number is given. ``mcmc_steps`` may differ per route (``mcmc_steps={latent:40,mcmc:60}``),
e.g. to compare latent and pixel MALA in the same wall time. <run dir>/inpainting_<route>.png: per image,
original | masked | n completions.
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
from omegaconf import DictConfig, ListConfig
from torch.utils.data import DataLoader
from torchmetrics.functional import structural_similarity_index_measure as ssim
from tqdm import tqdm

from glow.cli import hydra_entry
from glow.conditioning import make_condition
from glow.config import check_seed, require_values, validate_ckpt_path
from glow.data.checks import check_image_shape
from glow.density import DensityModel
from glow.errors import ConfigError, exit_with_config_error
from glow.sampling.inpaint import METHODS, ROUTES, completions_uint8, inpaint, pick_route
from glow.checkpoints import read_checkpoint
from glow.masks import MASK_KINDS, make_mask
from glow.run_config import use_run_data
from glow.rundir import register_resolver
from glow.quantize import bits_per_dim, preprocess
from glow.sampling import load, save_grid

register_resolver()  # ${unique_id:} in conf/evaluate_inpainting.yaml's hydra.run.dir


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


def score(completions: torch.Tensor, test: torch.Tensor, hole: torch.Tensor) -> dict:
    """The figures of uint8 completions [N, n, C, H, W] of uint8 test images; hole [N, C, H, W] (1 = missing)."""
    target, comp = test.float() / 255, completions.float() / 255
    n = comp.shape[1]
    mean_completion = comp.mean(1)
    per_completion = torch.stack([psnr(comp[:, k], target, hole) for k in range(n)], 1)
    pairs = list(itertools.combinations(range(n), 2))
    diversity = (torch.stack([(((comp[:, i] - comp[:, j]) * hole) ** 2).flatten(1).sum(1).sqrt() for i, j in pairs],
                             1).mean().item() if pairs else 0.0)
    observed = (hole == 0).unsqueeze(1).expand_as(completions)
    change = (completions.int() - test.unsqueeze(1).int()).abs()[observed]
    return {"psnr_mean_completion": psnr(mean_completion, target, hole).mean().item(),
            "psnr_best_of_n": per_completion.max(1).values.mean().item(),
            "ssim_mean_completion": ssim(mean_completion, target, data_range=1.0).item(),
            "diversity": diversity, "observed_max_abs_change": int(change.max()) if change.numel() else 0}


def complete(model: DensityModel, images: torch.Tensor, mask: torch.Tensor, method: str, temperature, cfg: DictConfig,
             device, seed: int) -> tuple[torch.Tensor, dict]:
    """uint8 completions [N, n, C, H, W] of uint8 images by one route, and what the route reports."""
    n_bits, generator = model.n_bits, torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    outputs, stats, cond_bpd, hole_bpd = [], [], [], []
    start = time.time()
    for batch, m in tqdm(list(zip(images.split(cfg.batch_size), mask.split(cfg.batch_size))),
                         desc=f"inpainting ({method}, T={temperature})", unit="batch"):
        batch, m = batch.to(device), m.to(device)
        x = preprocess(batch, n_bits, dequantize=False)
        result = inpaint(model, x, m, n=cfg.n, method=method, temperature=temperature, steps=steps_for(cfg, method),
                         step_size=cfg.step_size, map_steps=cfg.map_steps, init=cfg.init, generator=generator)
        outputs.append(completions_uint8(result, batch, m, n_bits).cpu())
        stats.append({"acceptance_rate": result.acceptance_rate, **result.stats})
        if result.method == "cglow":
            with torch.no_grad():
                bpd = bits_per_dim(model.log_prob(preprocess(batch, n_bits, generator=None),
                                                  make_condition(x, m)), model.num_dims, n_bits)
            cond_bpd.append(bpd.cpu())
            missing = (m.flatten(1).sum(1) * batch.shape[1]).clamp_min(1)
            hole_bpd.append((bpd * model.num_dims / missing).cpu())
    seconds = time.time() - start
    used = ROUTES[result.method].temperature if temperature is None else temperature
    info = {"method": result.method, "temperature": used, "seconds": round(seconds, 1),
            "seconds_per_8_images": round(seconds * 8 / images.shape[0], 1)}
    for key in sorted({k for s in stats for k, v in s.items() if isinstance(v, (int, float)) and v is not None}):
        values = [s[key] for s in stats if isinstance(s.get(key), (int, float))]
        info[key] = sum(values) / len(values)
    if cond_bpd:
        info["cond_bpd_upper_bound"] = torch.cat(cond_bpd).mean().item()
        info["hole_bpd_upper_bound"] = torch.cat(hole_bpd).mean().item()
    return torch.cat(outputs), info


def steps_for(cfg: DictConfig, method: str) -> int | None:
    """``mcmc_steps``: one number for every route, or per route, e.g. {latent: 40, mcmc: 60}."""
    steps = cfg.mcmc_steps
    return steps.get(method) if isinstance(steps, (dict, DictConfig)) else steps


def finite_or_none(value):
    """NaN / inf (e.g. an ESS from too few steps) as null, so the results file is valid JSON."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def make_hole_mask(cfg: DictConfig, images: torch.Tensor, seed: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    fraction = cfg.mask_size / h if cfg.mask == "center" and cfg.mask_size else cfg.center_fraction
    return make_mask(cfg.mask, images.shape[0], (h, w), center_fraction=fraction, pixel_rate=cfg.pixel_rate,
                     generator=torch.Generator().manual_seed(seed))


def choose_temperature(model, val: torch.Tensor, method: str, cfg: DictConfig, device) -> tuple[float, dict]:
    """The temperature of the grid with the best PSNR of the mean completion on validation images."""
    mask = make_hole_mask(cfg, val, cfg.seed + 1)
    sweep = {}
    for t in [float(t) for t in cfg.temperature_grid]:
        completions, _ = complete(model, val, mask, method, t, cfg, device, cfg.seed + 1)
        sweep[str(t)] = score(completions, val, mask.expand_as(val.float()))["psnr_mean_completion"]
    best = max(sweep, key=sweep.get)
    return float(best), sweep


def evaluate(cfg: DictConfig) -> dict:
    methods = list(cfg.method) if isinstance(cfg.method, (list, ListConfig)) else [cfg.method]
    try:
        validate_ckpt_path(cfg.ckpt_path, required=True)
        require_values(cfg)
        check_seed("seed", cfg.seed)
        for method in methods:
            if method not in METHODS:
                raise ConfigError(f"method={method!r} is not allowed: use one of {', '.join(METHODS)} (or a list)")
        if cfg.mask not in MASK_KINDS:
            raise ConfigError(f"mask={cfg.mask!r} is not allowed: use one of {', '.join(MASK_KINDS)}")
        for key in ("n_images", "n", "batch_size", "val_images"):
            if not isinstance(cfg[key], int) or cfg[key] < 1:
                raise ConfigError(f"{key}={cfg[key]!r} is not allowed: use a positive integer")
        t = cfg.inpaint_temperature
        if t is not None and t != "auto" and (not isinstance(t, (int, float)) or t < 0):
            raise ConfigError(f"inpaint_temperature={t!r} is not allowed: use auto, null or a number >= 0")
        use_run_data(cfg, cfg.ckpt_path, read_checkpoint(cfg.ckpt_path))  # the run's data, data.* given here on top
        datamodule = instantiate(cfg.data)
    except (ConfigError, ValueError) as err:
        exit_with_config_error(err)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    model = load(cfg.ckpt_path, use_ema=cfg.ema).to(device)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    try:
        check_image_shape(datamodule.image_shape, model.image_shape, cfg.data.name)
        methods = [pick_route(model, m) for m in methods]
    except (ConfigError, ValueError) as err:
        exit_with_config_error(err)
    test = all_images(datamodule.test_set, cfg.n_images)
    mask = make_hole_mask(cfg, test, cfg.seed)
    hole = mask.expand_as(test.float())
    results = {"data": cfg.data.name, "mask": cfg.mask, "hole_pixels": int(mask[0].sum()),
               "n_images": int(test.shape[0]), "n": cfg.n, "ckpt_path": str(cfg.ckpt_path), "routes": {},
               "baselines": {}}
    out = Path(cfg.paths.output_dir)
    target = test.float() / 255
    for method in methods:
        temperature, sweep = cfg.inpaint_temperature, None
        if temperature == "auto":
            if method == "cglow":  # cheap: a sweep on validation images
                val = all_images(datamodule.val_set, cfg.val_images)
                temperature, sweep = choose_temperature(model, val, method, cfg, device)
            else:  # latent / mcmc: T = 1 is the model's own conditional; a sweep would cost minutes per point
                temperature = None
        completions, info = complete(model, test, mask, method, temperature, cfg, device, cfg.seed)
        route = {**score(completions, test, hole), **info}
        if sweep is not None:
            route["temperature_chosen_on"] = f"validation ({cfg.val_images} images)"
            route["validation_psnr_by_temperature"] = sweep
        results["routes"][method] = route
        k = min(cfg.grid_images, test.shape[0])
        masked = torch.where(hole[:k].bool(), torch.full_like(target[:k], 0.5), target[:k])
        rows = torch.cat([target[:k].unsqueeze(1), masked.unsqueeze(1), completions[:k].float() / 255], 1)
        save_grid(rows.flatten(0, 1) - 0.5, out / f"inpainting_{method}.png", n_bits=8, nrow=2 + cfg.n)
    for name, fill in baselines(all_images(datamodule.train_set), test, hole).items():
        filled = (fill * 255).round().to(torch.uint8).unsqueeze(1)
        results["baselines"][name] = {**score(filled, test, hole), "psnr_mean_completion": psnr(fill, target, hole)
                                      .mean().item(), "ssim_mean_completion": ssim(fill, target, data_range=1.0).item()}
    results = finite_or_none(results)
    text = json.dumps(results, indent=2) + "\n"
    (out / "inpainting.json").write_text(text)
    if cfg.get("json"):
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(text)
    print(text)
    print(f"written to {out / 'inpainting.json'}" + (f" and {cfg.json}" if cfg.get("json") else ""))
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate_inpainting")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    hydra_entry(main, "evaluate_inpainting", Path(__file__).resolve().parents[1] / "conf")  # --help; composition errors: one line
