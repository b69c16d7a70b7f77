"""What users do with a trained model, as pure functions on a Glow (shared by sample.py and callbacks).

All images are in model space ([-0.5, 0.5)) unless named ``*_uint8``; ``save_grid`` turns them into
PNGs through glow.quantize. Everything here runs in float32, whatever precision training used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torchvision.utils import save_image

from glow.model import Glow
from glow.quantize import preprocess, to_unit_range


class NonFiniteSampleError(RuntimeError):
    pass


# -- loading ---------------------------------------------------------------------------------
def load_checkpoint(ckpt_path: str | Path, map_location: str = "cpu") -> dict:
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={str(ckpt_path)!r}: no such checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: name it
        raise RuntimeError(f"ckpt_path={str(ckpt_path)!r} could not be read as a checkpoint: "
                           f"{str(err).splitlines()[0]}") from err


def load(ckpt_path: str | Path, use_ema: bool = True, map_location: str = "cpu") -> Glow:
    """Rebuild the Glow of a train.py checkpoint, with its EMA weights when it has them."""
    checkpoint = load_checkpoint(ckpt_path, map_location)
    hparams = checkpoint["hyper_parameters"]
    model = Glow(**hparams["model_config"])
    state = checkpoint["state_dict"]
    prefix = "ema.module." if use_ema and any(k.startswith("ema.module.") for k in state) else "model."
    # torch.compile wraps modules as `_orig_mod`; strip it so compiled and plain runs load alike
    weights = {k[len(prefix):].replace("_orig_mod.", ""): v for k, v in state.items() if k.startswith(prefix)}
    if prefix == "ema.module.":
        # the average holds parameters only; the buffers (ActNorm flags, permutations) are the live ones
        live = {k[len("model."):].replace("_orig_mod.", ""): v for k, v in state.items() if k.startswith("model.")}
        weights = {**{k: v for k, v in live.items() if k not in weights}, **weights}
    model.load_state_dict(weights)
    model.n_bits = int(hparams.get("n_bits", 8))
    return model.eval()


# -- grids -----------------------------------------------------------------------------------
def standard_noise(model: Glow, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
    device = model.top_prior.anchor.device
    return [torch.randn((n, *shape), generator=generator).to(device) for shape in model.latent_shapes]


@torch.no_grad()
def temperature_grid(model: Glow, temperatures: Sequence[float], n: int, generator: torch.Generator | None = None,
                     labels: Tensor | None = None, allow_nonfinite: bool = False) -> Tensor:
    """One row of n samples per temperature, with the same noise in every row: [len(T) * n, C, H, W]."""
    if labels is not None:
        n = len(labels)
        labels = labels.to(model.top_prior.anchor.device)
    noise = standard_noise(model, n, generator)
    rows = [model.sample(n, temperature=t, cond=labels, noise=noise) for t in temperatures]
    grid = torch.cat(rows)
    return grid if allow_nonfinite else check_finite(grid, "samples")


@torch.no_grad()
def reconstruct(model: Glow, x: Tensor, cond: Tensor | None = None) -> Tensor:
    """decode(encode(x)): exact, no latent resampled."""
    zs, _ = model.encode(x, cond)
    return model.decode(zs, cond)


@torch.no_grad()
def reconstruction_grid(model: Glow, images_uint8: Tensor, cond: Tensor | None, n_bits: int) -> Tensor:
    """Originals (bin centres) on the first row, their reconstructions on the second."""
    x = preprocess(images_uint8, n_bits, dequantize=False)
    return torch.cat([x, reconstruct(model, x, cond)])


def check_finite(x: Tensor, what: str) -> Tensor:
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x.flatten(1))).any(1).sum().item()
        raise NonFiniteSampleError(f"{bad} of {x.shape[0]} {what} are non-finite (NaN or inf)")
    return x


def blank_nonfinite(images: Tensor) -> tuple[Tensor, int]:
    """Replace every image holding a NaN or inf by mid-grey; return the images and how many there were."""
    bad = ~torch.isfinite(images.flatten(1)).all(1)
    if bad.any():
        images = images.clone()
        images[bad] = 0.0
    return images, int(bad.sum())


def save_grid(grid: Tensor, path: str | Path, n_bits: int = 8, nrow: int | None = None) -> Path:
    """Write a model-space grid as a PNG via torchvision; rows of ``nrow`` (default: square-ish)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_finite(grid, "images")
    save_image(to_unit_range(grid.cpu(), n_bits), path, nrow=nrow or max(1, int(grid.shape[0] ** 0.5)), padding=1)
    return path
