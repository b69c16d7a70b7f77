"""What every inpainting route takes and returns (glow.sampling.inpaint holds the route registry)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor


@dataclass
class InpaintResult:
    completions: Tensor              # [B, n, C, H, W], model space; observed pixels == input
    method: str                      # the route that made them: a key of glow.sampling.inpaint.ROUTES
    acceptance_rate: float | None = None
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class InpaintOptions:
    """A route's settings; None means the route's default (glow.sampling.inpaint.ROUTES)."""

    temperature: float | None = None
    steps: int | None = None             # sampler steps (MCMC routes)
    step_size: float | None = None
    map_steps: int = 200                 # gradient steps of the MAP fill
    init: str | None = None              # how chains start (each MCMC route names its own)
    generator: torch.Generator | None = None
    progress: Callable[[int], None] | None = None  # called once per sampler step


def broadcast_mask(mask: Tensor, x: Tensor) -> Tensor:
    """A hole mask [B, H, W], [B, 1, H, W] or [B, C, H, W] as x's shape and dtype (1 = missing)."""
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    return mask.to(x.dtype).expand_as(x)


def repeat_rows(x: Tensor, mask: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Each image and its full mask n times, image-major: the rows of n completions per image."""
    return x.repeat_interleave(n, dim=0), broadcast_mask(mask, x).repeat_interleave(n, dim=0)


def as_result(filled: Tensor, x_rep: Tensor, m_rep: Tensor, x: Tensor, n: int, method: str,
              acceptance_rate: float | None = None, stats: dict | None = None) -> InpaintResult:
    """Completions with the observed pixels pasted back from the input, exactly, as [B, n, C, H, W]."""
    completions = torch.where(m_rep.bool(), filled, x_rep)
    return InpaintResult(completions.view(x.shape[0], n, *x.shape[1:]), method, acceptance_rate, stats or {})
