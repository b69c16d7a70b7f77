"""The training module's arguments (conf/module/*.yaml, ``module.<key>``): allowed values and their
one-line checks, written once. ``DensityModule.__init__`` calls ``check_module_arguments`` when
train.py instantiates it, before any data is read or any step is taken.
"""

from __future__ import annotations

import torch

from glow.density import Capabilities
from glow.dequantization import DEQUANTIZATIONS
from glow.errors import fail, is_int, is_number
from glow.quantize import check_n_bits
from glow.schedule import LR_SCHEDULES

OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax, "adamw": torch.optim.AdamW}


def _positive(key: str, value, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not (is_number(value) and value > 0):  # NaN and inf fail is_number: `value <= 0` alone lets them through
        fail(key, value, "use a finite positive number" + (" or null" if nullable else ""))


def _count(key: str, value, minimum: int, meaning: str = "") -> None:
    if not (is_int(value) and value >= minimum):
        fail(key, value, f"use an integer >= {minimum}" + meaning)


def check_module_arguments(capabilities: Capabilities, n_bits, optimizer, lr, weight_decay, warmup_steps,
                           grad_clip_norm, ema_decay, init_batch_size, classifier_weight, max_nonfinite_steps,
                           iw_samples, hole_regression_weight, kl_warmup_steps, lr_schedule,
                           dequantization) -> None:
    """Raise glow.errors.ConfigError naming the first bad ``module.<key>``; ``capabilities`` are the
    model's, for the terms only some families have."""
    check_n_bits(n_bits, "module.n_bits")
    if optimizer not in OPTIMIZERS:
        fail("module.optimizer", optimizer, f"use one of {', '.join(OPTIMIZERS)}")
    _positive("module.lr", lr)
    if not (is_number(weight_decay) and weight_decay >= 0):
        fail("module.weight_decay", weight_decay, "use a finite number >= 0")
    _count("module.warmup_steps", warmup_steps, 0, " (0: no warmup)")
    if lr_schedule not in LR_SCHEDULES:
        fail("module.lr_schedule", lr_schedule, f"use one of {', '.join(LR_SCHEDULES)}")
    _positive("module.grad_clip_norm", grad_clip_norm, nullable=True)
    if ema_decay is not None and not (is_number(ema_decay) and not is_int(ema_decay) and 0 < ema_decay < 1):
        fail("module.ema_decay", ema_decay, "use a number in (0, 1) or null")
    _count("module.init_batch_size", init_batch_size, 1)
    if not (is_number(classifier_weight) and classifier_weight >= 0) \
            or (classifier_weight > 0 and not capabilities.class_head):
        fail("module.classifier_weight", classifier_weight,
             "use a number >= 0, and > 0 only with model.class_head=true (and model.conditional=class)")
    _count("module.max_nonfinite_steps", max_nonfinite_steps, 1)
    _count("module.iw_samples", iw_samples, 0, " (0: no importance-weighted bound)")
    _positive("module.hole_regression_weight", hole_regression_weight)
    _count("module.kl_warmup_steps", kl_warmup_steps, 0, " (0: no KL warm-up)")
    if dequantization not in DEQUANTIZATIONS:
        fail("module.dequantization", dequantization, f"use one of {', '.join(DEQUANTIZATIONS)}")
    if dequantization not in capabilities.dequantizations:
        fail("module.dequantization", dequantization, f"this model takes {', '.join(capabilities.dequantizations)} "
                                                      f"(variational: Glow without image conditioning, MAF, IAF)")
    if kl_warmup_steps and not capabilities.kl_term:
        fail("module.kl_warmup_steps", kl_warmup_steps, "use 0: only model.family=vae has a KL term to anneal")


def kl_weight(step: int, kl_warmup_steps: int) -> float:
    """KL warm-up (Rezende & Mohamed 2015; van den Berg et al. 2018): β rises linearly from
    1/steps to 1; 1 without warm-up."""
    return min(1.0, (step + 1) / kl_warmup_steps) if kl_warmup_steps else 1.0

