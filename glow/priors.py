"""Gaussian priors on the latents, all evaluated in float32 (or float64) even under autocast.

* ``TopPrior``: a diagonal Gaussian on the last level's latent. Its mean and log-std are learned per
  channel (Glow's ``learntop``: a zero conv applied to zeros, so constant over positions), optionally
  plus a zero-init linear function of a one-hot class label (Glow's ``ycond``) or a zero-init conv
  of condition features. Without any of those it is N(0, I).
* ``SplitPrior``: the conditional Gaussian p(z_i | h_i) on the half factored out at a split, whose
  mean and log-std come from a zero-init conv on the kept half (plus the same optional conditioning).

* ``Split`` (multi-scale architecture, Dinh et al. 2017; Glow): ``split(h) -> (kept, z)`` keeps the
  first half of the channels to be transformed further and hands the second half ``z`` to the latent
  list, under its SplitPrior p(z | kept). Splitting is a pure re-indexing, so its log|det| is 0 and
  ``merge`` is its exact inverse: no latent is ever resampled on decode. It lives here, not under
  glow/flows/, because it is not a Flow (it has split/merge) and it owns a prior.

Every learned part starts at zero, i.e. at N(0, I), and scales its output by exp(3 * logs) as
openai/glow does (glow.flows.nets.ZeroConv2d / ZeroLinear / ZeroBias). Sampling at temperature T scales the std by T.

``log_std_bound`` (model.prior_log_std_bound; not Glow, whose log-std is unbounded): log_std = B tanh(raw / B),
a std in (e^-B, e^B). Why: an input far from the data can drive a split prior's conv to a log-std of
-674 (seen on MNIST at step 1,388 of the default run, after the flow's activations grew to 1e4), whose
exp overflows float32 (and float64), so the loss is inf and the guard must skip the step, and training
never receives the gradient that would correct the blow-up. Bounded, the loss stays finite and the
gradient (clipped) does. The prior is still an exact density.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glow.flows.base import full_precision, logdet_dtype, sum_except_batch
from glow.flows.nets import ZeroBias, ZeroConv2d, ZeroLinear, resize_like

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Per-sample sum of log N(z; mean, exp(log_std)^2), in at least float32."""
    dtype = logdet_dtype(z)
    z, mean, log_std = z.to(dtype), mean.to(dtype), log_std.to(dtype)
    return sum_except_batch(-0.5 * (LOG_2PI + 2 * log_std + ((z - mean) * torch.exp(-log_std)) ** 2))


def gaussian_sample(mean: Tensor, log_std: Tensor, temperature: float, noise: Tensor | None = None) -> Tensor:
    if noise is None:
        noise = torch.randn_like(mean)
    return mean + temperature * torch.exp(log_std) * noise.to(mean.dtype)


class _ConditionalGaussian(nn.Module):
    """Shared conditioning: a class embedding and/or a conv on condition features, added to (mean, log_std)."""

    def __init__(self, channels: int, num_classes: int = 0, cond_channels: int = 0, log_std_bound: float | None = None):
        super().__init__()
        self.channels = channels
        self.log_std_bound = log_std_bound
        self.class_embedding = ZeroLinear(num_classes, 2 * channels) if num_classes else None
        self.feature_conv = ZeroConv2d(cond_channels, 2 * channels) if cond_channels else None

    def _add_conditioning(self, h: Tensor, labels: Tensor | None, features: Tensor | None) -> Tensor:
        if self.class_embedding is not None:
            if labels is None:
                raise ValueError("this prior is class-conditional: pass the labels as cond")
            one_hot = F.one_hot(labels.long(), self.class_embedding.in_features).to(h.dtype)
            h = h + self.class_embedding(one_hot)[:, :, None, None]
        if self.feature_conv is not None:
            if features is None:
                raise ValueError("this prior is image-conditional: pass the condition as cond")
            h = h + self.feature_conv(resize_like(features, h).to(h.dtype))
        return h

    def _mean_log_std(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = h.chunk(2, dim=1)
        if self.log_std_bound is not None:
            log_std = self.log_std_bound * torch.tanh(log_std / self.log_std_bound)
        return mean, log_std


class TopPrior(_ConditionalGaussian):
    def __init__(self, shape: tuple[int, int, int], learn: bool = True, num_classes: int = 0, cond_channels: int = 0,
                 per_position: bool = False, log_std_bound: float | None = None):
        super().__init__(shape[0], num_classes, cond_channels, log_std_bound)
        self.shape = tuple(shape)
        spatial = tuple(shape[1:]) if per_position else (1, 1)
        self.learned = ZeroBias(2 * shape[0], spatial) if learn else None
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    def params(self, batch: int, labels: Tensor | None = None, features: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
        anchor = self.anchor  # follows the module's device and dtype (float64 in the exactness tests)
        with full_precision(anchor):
            h = anchor.new_zeros(batch, 2 * self.channels, *self.shape[1:], dtype=logdet_dtype(anchor))
            if self.learned is not None:
                h = h + self.learned().to(h.dtype)
            h = self._add_conditioning(h, labels, features)
        return self._mean_log_std(h)


class SplitPrior(_ConditionalGaussian):
    def __init__(self, kept_channels: int, factored_channels: int, num_classes: int = 0, cond_channels: int = 0,
                 log_std_bound: float | None = None):
        super().__init__(factored_channels, num_classes, cond_channels, log_std_bound)
        self.conv = ZeroConv2d(kept_channels, 2 * factored_channels)

    def params(self, kept: Tensor, labels: Tensor | None = None, features: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
        with full_precision(kept):
            kept = kept.to(logdet_dtype(kept))
            h = self._add_conditioning(self.conv(kept), labels, features)
        return self._mean_log_std(h)


class Split(nn.Module):
    def __init__(self, channels: int, num_classes: int = 0, cond_channels: int = 0, log_std_bound: float | None = None):
        super().__init__()
        self.factored = channels // 2
        self.kept = channels - self.factored
        self.prior = SplitPrior(self.kept, self.factored, num_classes, cond_channels, log_std_bound)

    def split(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return h[:, :self.kept], h[:, self.kept:]

    def merge(self, kept: Tensor, z: Tensor) -> Tensor:
        return torch.cat([kept, z.to(kept.dtype)], dim=1)
