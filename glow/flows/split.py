"""Split (multi-scale architecture, Dinh et al. 2017; Glow): factor out half of the channels.

``split(h) -> (kept, z)`` keeps the first half to be transformed further and hands the second half
``z`` to the latent list. The factored half gets a learned conditional prior p(z | kept) (see
glow.priors.SplitPrior). Splitting is a pure re-indexing, so its log|det| is 0 and ``merge`` is its
exact inverse: no latent is ever resampled on decode.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from glow.priors import SplitPrior


class Split(nn.Module):
    def __init__(self, channels: int, num_classes: int = 0, cond_channels: int = 0):
        super().__init__()
        self.factored = channels // 2
        self.kept = channels - self.factored
        self.prior = SplitPrior(self.kept, self.factored, num_classes, cond_channels)

    def split(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return h[:, :self.kept], h[:, self.kept:]

    def merge(self, kept: Tensor, z: Tensor) -> Tensor:
        return torch.cat([kept, z.to(kept.dtype)], dim=1)
