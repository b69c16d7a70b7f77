"""Inpainting benchmark: completions of test images with a hole, by every route, against baselines.

    python scripts/evaluate_inpainting.py ckpt_path=<c-Glow ckpt> data=mnist n_images=200 json=cglow.json
    python scripts/evaluate_inpainting.py ckpt_path=<plain Glow ckpt> "method=[latent,mcmc]" n_images=64
    python scripts/evaluate_inpainting.py ckpt_path=... data=imagefolder data.path=cifar10-subset mask_size=16

``method`` is one route or a list (auto | cglow | latent | mcmc | map). Writes ONE results file,
<run dir>/inpainting.json (and a copy at ``json=PATH`` when given), holding over the first n_images
test images, for every route and for the baselines (mean_fill: the training mean image;
nearest_neighbour: the training image nearest on the observed pixels; gaussian_residual, for a c-Glow
with a hole predictor: its mu(c) plus a Gaussian per pixel and context fitted on training holes,
glow.sampling.gaussian_residual) the figures of glow.sampling.inpaint_scores:
  psnr_mean_completion, psnr_best_of_n, psnr_per_completion, ssim_mean_completion, diversity,
  energy_score, observed_max_abs_change (uint8 levels: must be 0), seconds, seconds_per_8_images
  hole_bpd (routes with a density, and gaussian_residual): bits per missing dim of the true hole given
        the observed pixels, on the same uniformly dequantised test images; an upper bound, labelled
        (hole_bpd_is; glow.sampling.hole_likelihood)
  latent, mcmc: acceptance_rate, and for latent the ESS / autocorrelation of each chain's hole mean
  with classifier_ckpt=PATH (scripts/train_digit_classifier.py): classifier_agreement (completions
        classified as the true label), classifier_agreement_mean, classes_per_image
The c-Glow sampling temperature (``inpaint_temperature=auto``, the default) is chosen on the
VALIDATION split (``val_images`` images, grid ``temperature_grid``) by the best PSNR of the best of n,
which rewards both quality and spread (the mean completion's PSNR alone favours T -> 0), never on test; the sweep is in the results. The MCMC routes use T = 1 (the model's own conditional) unless a
number is given. ``mcmc_steps`` may differ per route (``mcmc_steps={latent:80,mcmc:60}``).
<run dir>/inpainting_<route>.png: per image, original | masked | n completions.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from glow.checkpoints import read_checkpoint
from glow.cli import hydra_entry
from glow.config import check_seed, require_values, validate_ckpt_path
from glow.data.checks import check_image_shape
from glow.density import DensityModel
from glow.digit_classifier import accuracy, agreement, load_classifier
from glow.errors import ConfigError, exit_with_config_error
from glow.masks import MASK_KINDS, make_mask
from glow.quantize import preprocess
from glow.run_config import use_run_data
from glow.rundir import register_resolver
from glow.sampling import save_grid
from glow.sampling.hole_likelihood import BOUND, dequantised, gaussian_residual_baseline, model_hole_bpd
from glow.sampling.inpaint import METHODS, ROUTES, completions_uint8, inpaint, pick_route
from glow.sampling.inpaint_scores import baseline_fills, choose_by_best_of_n, score
from glow.sampling.load import rebuild

register_resolver()  # ${unique_id:} in conf/evaluate_inpainting.yaml's hydra.run.dir


def all_images(dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images [N, C, H, W], labels [N]) of a data set (its first ``limit`` items)."""
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        return tensors[0][:limit], tensors[1][:limit]
    if limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    batches = list(DataLoader(dataset, batch_size=256, num_workers=0))
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def complete(model: DensityModel, images: torch.Tensor, mask: torch.Tensor, method: str, temperature, cfg: DictConfig,
             device, seed: int) -> tuple[torch.Tensor, dict]:
    """uint8 completions [N, n, C, H, W] of uint8 images by one route, and what the route reports."""
    n_bits, generator = model.n_bits, torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    outputs, stats = [], []
    start = time.time()
    for batch, m in tqdm(list(zip(images.split(cfg.batch_size), mask.split(cfg.batch_size))),
                         desc=f"inpainting ({method}, T={temperature})", unit="batch"):
        batch, m = batch.to(device), m.to(device)
        x = preprocess(batch, n_bits, dequantize=False)
        result = inpaint(model, x, m, n=cfg.n, method=method, temperature=temperature, steps=steps_for(cfg, method),
                         step_size=cfg.step_size, map_steps=cfg.map_steps, init=cfg.init, generator=generator)
        outputs.append(completions_uint8(result, batch, m, n_bits).cpu())
        stats.append({"acceptance_rate": result.acceptance_rate, **result.stats})
    seconds = time.time() - start
    used = ROUTES[result.method].temperature if temperature is None else temperature
    info = {"method": result.method, "temperature": used, "seconds": round(seconds, 1),
            "seconds_per_8_images": round(seconds * 8 / images.shape[0], 1)}
    for key in sorted({k for s in stats for k, v in s.items() if isinstance(v, (int, float)) and v is not None}):
        values = [s[key] for s in stats if isinstance(s.get(key), (int, float))]
        info[key] = sum(values) / len(values)
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
    """The temperature of the grid whose completions of validation images have the best PSNR of the best
    of n (glow.sampling.inpaint_scores: it rewards both quality and spread)."""
    mask = make_hole_mask(cfg, val, cfg.seed + 1)
    sweep = {}
    for t in [float(t) for t in cfg.temperature_grid]:
        completions, _ = complete(model, val, mask, method, t, cfg, device, cfg.seed + 1)
        figures = score(completions, val, mask.expand_as(val.float()))
        sweep[str(t)] = {k: figures[k] for k in ("energy_score", "psnr_mean_completion", "psnr_best_of_n",
                                                  "diversity")}
    return float(choose_by_best_of_n(sweep)), sweep


def with_classifier(figures: dict, classifier, completions: torch.Tensor, labels: torch.Tensor) -> dict:
    """Add the digit classifier's agreement with the true labels on the completions (uint8 [N, n, ...])."""
    if classifier is None:
        return figures
    mean_completion = completions.float().mean(1).round()
    return {**figures, **agreement(classifier.predict(completions), labels, classifier.predict(mean_completion))}


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
        for key in ("n_images", "n", "batch_size", "val_images", "gaussian_fit_images"):
            if not isinstance(cfg[key], int) or cfg[key] < 1:
                raise ConfigError(f"{key}={cfg[key]!r} is not allowed: use a positive integer")
        t = cfg.inpaint_temperature
        if t is not None and t != "auto" and (not isinstance(t, (int, float)) or t < 0):
            raise ConfigError(f"inpaint_temperature={t!r} is not allowed: use auto, null or a number >= 0")
        checkpoint = read_checkpoint(cfg.ckpt_path)
        use_run_data(cfg, cfg.ckpt_path, checkpoint)  # the run's data, data.* given here on top
        model = rebuild(checkpoint, cfg.ckpt_path, use_ema=cfg.ema)  # a checkpoint that does not fit: one line
        del checkpoint
        classifier = load_classifier(cfg.classifier_ckpt) if cfg.classifier_ckpt else None
        datamodule = instantiate(cfg.data)
    except (ConfigError, ValueError) as err:
        exit_with_config_error(err)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    model = model.to(device)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    try:
        check_image_shape(datamodule.image_shape, model.image_shape, cfg.data.name)
        methods = [pick_route(model, m) for m in methods]
    except (ConfigError, ValueError) as err:
        exit_with_config_error(err)
    test, labels = all_images(datamodule.test_set, cfg.n_images)
    mask = make_hole_mask(cfg, test, cfg.seed)
    hole = mask.expand_as(test.float())
    results = {"data": cfg.data.name, "mask": cfg.mask, "hole_pixels": int(mask[0].sum()),
               "n_images": int(test.shape[0]), "n": cfg.n, "ckpt_path": str(cfg.ckpt_path), "routes": {},
               "baselines": {}}
    if classifier is not None:
        results["classifier"] = {"path": str(cfg.classifier_ckpt), "test_accuracy": classifier[1],
                                 "accuracy_on_these_originals": accuracy(classifier[0], test, labels)}
        classifier = classifier[0]
    out = Path(cfg.paths.output_dir)
    target = test.float() / 255
    test_x = dequantised(test, model.n_bits, cfg.seed + 3)  # one draw of training's dequantisation, shared
    for method in methods:
        temperature, sweep = cfg.inpaint_temperature, None
        if temperature == "auto":
            if method == "cglow":  # cheap: a sweep on validation images
                val, _ = all_images(datamodule.val_set, cfg.val_images)
                temperature, sweep = choose_temperature(model, val, method, cfg, device)
            else:  # latent / mcmc: T = 1 is the model's own conditional; a sweep would cost minutes per point
                temperature = None
        completions, info = complete(model, test, mask, method, temperature, cfg, device, cfg.seed)
        route = with_classifier({**score(completions, test, hole), **info}, classifier, completions, labels)
        if ROUTES[method].has_density:
            route["hole_bpd"] = model_hole_bpd(model.cpu(), test_x, test, mask).mean().item()
            route["hole_bpd_is"] = BOUND
            model.to(device)
        if sweep is not None:
            route["temperature_chosen_on"] = f"validation ({cfg.val_images} images), best PSNR of the best of n"
            route["validation_by_temperature"] = sweep
        results["routes"][method] = route
        k = min(cfg.grid_images, test.shape[0])
        masked = torch.where(hole[:k].bool(), torch.full_like(target[:k], 0.5), target[:k])
        rows = torch.cat([target[:k].unsqueeze(1), masked.unsqueeze(1), completions[:k].float() / 255], 1)
        save_grid(rows.flatten(0, 1) - 0.5, out / f"inpainting_{method}.png", n_bits=8, nrow=2 + cfg.n)
    train, _ = all_images(datamodule.train_set)
    fills = baseline_fills(train, test, hole)
    if model.capabilities.hole_predictor:
        fit = train[:cfg.gaussian_fit_images]
        figures, fills["gaussian_residual"] = gaussian_residual_baseline(
            model.cpu(), fit, make_hole_mask(cfg, fit, cfg.seed + 2), test_x, test, mask, cfg.seed + 4)
        results["baselines"]["gaussian_residual"] = figures
    for name, fill in fills.items():
        figures = with_classifier(score(fill, test, hole), classifier, fill, labels)
        results["baselines"][name] = {**results["baselines"].get(name, {}), **figures}
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
