"""Scores of inpainting completions against the true images (scripts/evaluate_inpainting.py).

Completions are uint8 [N, n, C, H, W], images uint8 [N, C, H, W], the hole [N, C, H, W] (1 = missing);
pixels are compared in [0, 1]. Per image, then averaged over images:

  psnr_mean_completion  PSNR (dB) in the hole of the mean of the n completions
  psnr_best_of_n        PSNR of the best of the n completions
  diversity             mean pairwise L2 distance between completions, in the hole
  energy_score          mean_k ||x_k - x|| - diversity / 2 over the hole (lower is better): a proper
                        scoring rule of the completions as draws from p(hole | observed) (Gneiting &
                        Raftery 2007), minimised in expectation by the true conditional. Reported, not
                        used to choose: on short-trained c-Glows it prefers T = 1, whose pixel noise
                        adds spread in every direction (the best of 8 is then below the mean completion).

The baseline fills (the training mean image; the training image nearest on the observed pixels) are
here too.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor
from torchmetrics.functional import structural_similarity_index_measure as ssim


def psnr(pred: Tensor, target: Tensor, hole: Tensor) -> Tensor:
    """Per-image PSNR over the hole, pixels in [0, 1]."""
    mse = (((pred - target) ** 2) * hole).flatten(1).sum(1) / hole.flatten(1).sum(1).clamp_min(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def pairwise_distance(comp: Tensor, hole: Tensor) -> Tensor:
    """[N] mean L2 distance in the hole over the pairs of an image's completions (0 with one)."""
    pairs = list(itertools.combinations(range(comp.shape[1]), 2))
    if not pairs:
        return torch.zeros(comp.shape[0])
    return torch.stack([(((comp[:, i] - comp[:, j]) * hole) ** 2).flatten(1).sum(1).sqrt() for i, j in pairs],
                       1).mean(1)


def energy_score(comp: Tensor, target: Tensor, hole: Tensor) -> Tensor:
    """[N] energy score of completions [N, n, ...] in [0, 1] against the truth [N, ...], over the hole."""
    to_truth = torch.stack([(((comp[:, k] - target) * hole) ** 2).flatten(1).sum(1).sqrt()
                            for k in range(comp.shape[1])], 1).mean(1)
    return to_truth - 0.5 * pairwise_distance(comp, hole)


def score(completions: Tensor, test: Tensor, hole: Tensor) -> dict:
    """The figures of uint8 completions [N, n, C, H, W] of uint8 test images; hole [N, C, H, W] (1 = missing)."""
    target, comp = test.float() / 255, completions.float() / 255
    mean_completion = comp.mean(1)
    per_completion = torch.stack([psnr(comp[:, k], target, hole) for k in range(comp.shape[1])], 1)
    observed = (hole == 0).unsqueeze(1).expand_as(completions)
    change = (completions.int() - test.unsqueeze(1).int()).abs()[observed]
    return {"psnr_mean_completion": psnr(mean_completion, target, hole).mean().item(),
            "psnr_best_of_n": per_completion.max(1).values.mean().item(),
            "psnr_per_completion": per_completion.mean().item(),
            "ssim_mean_completion": ssim(mean_completion, target, data_range=1.0).item(),
            "diversity": pairwise_distance(comp, hole).mean().item(),
            "energy_score": energy_score(comp, target, hole).mean().item(),
            "observed_max_abs_change": int(change.max()) if change.numel() else 0}


def baseline_fills(train: Tensor, test: Tensor, hole: Tensor) -> dict[str, Tensor]:
    """uint8 fills [N, 1, C, H, W] of the hole: the training mean image, and the training image nearest
    on the observed pixels (squared distance)."""
    train_f, test_f = train.float() / 255, test.float() / 255
    mean_image = train_f.mean(0, keepdim=True)
    observed = 1 - hole
    nearest = torch.empty_like(test_f)
    for i in range(test_f.shape[0]):
        best, best_dist = None, math.inf
        for chunk in train_f.split(8192):
            dist = (((chunk - test_f[i]) ** 2) * observed[i]).flatten(1).sum(1)
            value, index = dist.min(0)
            if value.item() < best_dist:
                best_dist, best = value.item(), chunk[index]
        nearest[i] = best
    fills = {"mean_fill": test_f * observed + mean_image * hole, "nearest_neighbour": test_f * observed + nearest * hole}
    return {name: (fill * 255).round().to(torch.uint8).unsqueeze(1) for name, fill in fills.items()}


def choose_by_best_of_n(sweep: dict[str, dict]) -> str:
    """The key of the sweep (e.g. a temperature) whose completions have the best PSNR of the best of n.

    It rewards quality and spread together: T -> 0 collapses the n completions to one (the best of n
    is then the mean completion), while pixel noise at high T makes every completion worse; in between,
    completions that differ coherently give the best of n a better chance to be close to the truth."""
    return max(sweep, key=lambda key: sweep[key]["psnr_best_of_n"])
