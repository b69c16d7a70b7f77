"""One evaluation stage's figures, summed over every image of the split, on every rank."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, SumMetric


class EvalMetrics(nn.Module):
    """torchmetrics syncs their sums and counts across ranks at compute time; the data module's shards
    do not overlap, so every image counts exactly once. NaNs are kept (nan_strategy="disable"), never
    averaged away, and counted in ``nonfinite``."""

    def __init__(self, extra: tuple[str, ...] = ()):
        super().__init__()
        self.extra = nn.ModuleDict({name: MeanMetric(nan_strategy="disable") for name in extra})
        self.bpd = MeanMetric(nan_strategy="disable")
        self.nonfinite = SumMetric(nan_strategy="disable")
        self.images = SumMetric()

    def update(self, bpd: Tensor, extra: dict[str, Tensor] | None = None) -> None:
        for name, value in (extra or {}).items():
            self.extra[name].update(value.float())
        self.bpd.update(bpd.float())
        self.nonfinite.update((~torch.isfinite(bpd)).sum().float())
        self.images.update(float(bpd.shape[0]))

    def compute_and_reset(self) -> dict[str, Tensor]:
        figures = {"bpd": self.bpd.compute(), "nonfinite": self.nonfinite.compute(), "images": self.images.compute()}
        figures.update({name: m.compute() for name, m in self.extra.items() if m.update_count})
        for metric in (self.bpd, self.nonfinite, self.images, *self.extra.values()):
            metric.reset()
        return figures
