"""Neural networks inside the flow layers: coupling networks and zero-initialised output layers.

They need not be invertible; the flow layers around them are. The parameterisation is openai/glow's:

* ``ZeroConv2d`` / ``ZeroLinear``: zero-initialised output layers whose output is multiplied by
  exp(3 * logs), with a learned per-channel ``logs`` starting at 0 (openai's ``logscale_factor=3``).
  The factor 3 lets the output scale move three times faster than a plain bias would, which is what
  lets zero-initialised couplings and priors leave the identity quickly.
* ``CouplingNet``: conv3x3 -> ActNorm -> ReLU -> conv1x1 -> ActNorm -> ReLU -> ZeroConv2d. The
  hidden convs have no bias (ActNorm's loc replaces it) and their ActNorms are data-initialised by
  ``Glow.initialize`` in the same pass as the flow's own ActNorms, rank-synced under DDP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glow.flows.actnorm import ActNorm
from glow.flows.cache import cached

LOGSCALE_FACTOR = 3.0
# fold each hidden ActNorm into its conv (see _ActNormConv.forward); False only to measure the gain
FOLD_ACTNORM = True


class ZeroConv2d(nn.Module):
    """y = (conv3x3(x) + b) * exp(3 * logs), with weight, bias and logs all starting at zero.

    Not folded into one conv with weight W exp(3 logs), unlike the hidden layers' ActNorm: measured
    with steps alternating in one process (2 threads), a folded step took 0.99x the time at K=8 h=128
    batch 64 and 1.03x at K=32 h=64 batch 16. The output has only 2C channels, so the fold's extra
    weight-sized ops cost about what the output pass they save does.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y * torch.exp(LOGSCALE_FACTOR * self.logs).to(y.dtype)


class ZeroLinear(nn.Module):
    """openai's linear_zeros: y = (W x + b) * exp(3 * logs), everything starting at zero."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.logs = nn.Parameter(torch.zeros(out_features))

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(x)
        return y * torch.exp(LOGSCALE_FACTOR * self.logs).to(y.dtype)


class ZeroBias(nn.Module):
    """A zero conv applied to zeros (openai's ``learntop``): per-channel b * exp(3 * logs).

    ``spatial_shape=(h, w)`` gives one bias per position instead (not Glow; kept as an ablation).
    """

    def __init__(self, channels: int, spatial_shape: tuple[int, int] = (1, 1)):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, *spatial_shape))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self) -> Tensor:
        return self.bias * torch.exp(LOGSCALE_FACTOR * self.logs)


class _ActNormConv(nn.Module):
    """conv (no bias) -> ActNorm -> ReLU: one hidden layer of Glow's coupling network."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, inner_actnorm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                              bias=not inner_actnorm)
        nn.init.normal_(self.conv.weight, std=0.05)  # openai's default_initializer
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        self.norm = ActNorm(out_channels) if inner_actnorm else None

    @property
    def foldable(self) -> bool:
        """Whether conv + ActNorm may run as one conv: not while the ActNorm's init (which needs the
        conv's own output) is pending."""
        return self.norm is None or (FOLD_ACTNORM and not self.norm.init_pending)

    def folded(self) -> tuple[Tensor, Tensor]:
        """(weight, bias) of the one conv equal to conv -> ActNorm: (conv(x, W) + loc) * s =
        conv(x, W * s) + loc * s. The same function and gradients, minus two elementwise passes over the
        widest activations forward and backward (docs/performance.md: measured 5-15% of a CPU step)."""
        if self.norm is None:
            return self.conv.weight, self.conv.bias

        def make():
            scale = torch.exp(self.norm.log_scale).view(-1)
            return self.conv.weight * scale.view(-1, 1, 1, 1), self.norm.loc.view(-1) * scale
        # where no gradient is wanted (sampling, evaluation, invertible mode's no-grad passes), made once
        return cached(self, "_folded", (self.conv.weight, self.norm.loc, self.norm.log_scale), make)

    def forward(self, x: Tensor) -> Tensor:
        if not self.foldable:
            h, _ = self.norm(self.conv(x))
            return F.relu(h)
        # in place: the conv's output is a fresh tensor that its backward does not need
        return F.relu(F.conv2d(x, *self.folded(), padding=self.conv.padding), inplace=True)


class CouplingNet(nn.Module):
    """conv3x3 -> ActNorm -> ReLU -> conv1x1 -> ActNorm -> ReLU -> ZeroConv2d, as in Glow.

    An optional condition feature map (same height and width) is concatenated to the input.
    ``inner_actnorm=False`` gives biased hidden convs without ActNorm (the ablation).
    ``input_bound`` B (model.coupling_input_bound; not Glow): the network sees B tanh(x / B), so on an input
    far outside the training range it never extrapolates (a ReLU network's output grows linearly with its
    input; a saturated expanding scale then compounds through the couplings, see docs/training.md).
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, cond_channels: int = 0,
                 inner_actnorm: bool = True, input_bound: float | None = None):
        super().__init__()
        self.cond_channels, self.input_bound = cond_channels, input_bound
        self.hidden = nn.Sequential(
            _ActNormConv(in_channels + cond_channels, hidden_channels, 3, inner_actnorm),
            _ActNormConv(hidden_channels, hidden_channels, 1, inner_actnorm),
        )
        self.out = ZeroConv2d(hidden_channels, out_channels)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.input_bound is not None:
            x = self.input_bound * torch.tanh(x / self.input_bound)
        if self.cond_channels:
            if cond is None:
                raise ValueError("this coupling network is conditional: pass the condition features as cond")
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        return self.out(self.hidden(x))


def freeze_output_logscales(module: nn.Module) -> None:
    """Ablation: every zero layer's ``logs`` frozen at 0, i.e. a plain zero-initialised layer."""
    for m in module.modules():
        if isinstance(m, (ZeroConv2d, ZeroLinear, ZeroBias)):
            m.logs.requires_grad_(False)


def resize_like(features: Tensor, reference: Tensor) -> Tensor:
    if features.shape[-2:] == reference.shape[-2:]:
        return features
    return F.interpolate(features, size=reference.shape[-2:], mode="nearest")
