"""The coupling network's convolutions as matrix products, for CPU training (same function, faster).

Why: on this project's 2-core CPU the coupling networks are ~85% of a training step, and oneDNN's
convolution *backward* runs at ~30-45 GFLOP/s with poor 2-thread scaling, while MKL's GEMM runs
at ~65 GFLOP/s per core. Every convolution of Glow's coupling network maps onto one large GEMM
in channels-last layout (rows = B*H*W pixels), whose backward is two more GEMMs:

* 1x1 conv:  y = x W^T + b.
* 3x3 conv, narrow input (the first layer, C_in = C/2 [+ condition features]): ``im2col``
  copies the 9 shifted views of the narrow input into [rows, 9*C_in], then one GEMM.
* 3x3 conv, narrow output (the zero conv, C_out = 2 * C/2): one GEMM to [rows, 9*C_out] ("what
  each pixel sends to each of its 9 neighbours"), then ``col2im`` adds the 9 shifted slices.

im2col and col2im are each other's adjoint, so each is the other's backward; the shifting work
is always on the narrow side (<= 9 x 48 channels here), the wide 128-512 channels only ever go
through GEMMs. The result equals F.conv2d to float roundoff (tests/test_gemm_conv.py checks
values and gradients in float64). README, "Performance", has what it gains.

OFF by default (``ENABLED``): measured in the full training loop on one contended CPU thread it did
not pay (0.92x to 1.02x the oneDNN step at L=3, K=8, h=128, batch 64), although the coupling network
alone at 16x16 ran 1.2x (1 thread) to 1.3x (2 threads) faster. README, "Performance".
When on, it is used only for CPU float32/float64 without autocast (bf16 accumulation in col2im
would differ from a conv's) and at least ``MIN_ROWS`` pixels per batch (the 16x16 level at batch
64: on smaller levels oneDNN's conv was as fast or faster in isolation). GPUs keep cuDNN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ENABLED = False  # scripts/benchmark.py gemm_convs=true switches it on (suite=speed measures both)
MIN_ROWS = 8192


def applies(x: Tensor) -> bool:
    """Whether the GEMM path is used for a coupling network input x [B, C, H, W]."""
    return (ENABLED and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled("cpu") and x.shape[0] * x.shape[2] * x.shape[3] >= MIN_ROWS)


class _Im2col(torch.autograd.Function):
    """[B, H, W, C] -> [B, H, W, 3, 3, C]: out[.., i, j, di, dj, :] = x[.., i + di - 1, j + dj - 1, :]
    (zero outside the image), i.e. the 3x3 neighbourhood with padding 1."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        padded = F.pad(x, (0, 0, 1, 1, 1, 1))
        out = x.new_empty(b, h, w, 3, 3, c)
        for di in range(3):
            for dj in range(3):
                out[:, :, :, di, dj] = padded[:, di:di + h, dj:dj + w]
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return _Col2im.apply(grad)


class _Col2im(torch.autograd.Function):
    """The adjoint of _Im2col: [B, H, W, 3, 3, C] -> [B, H, W, C], each entry (i, j, di, dj) added
    to position (i + di - 1, j + dj - 1); what falls outside the image is dropped."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        b, h, w, _, _, c = z.shape
        padded = z.new_zeros(b, h + 2, w + 2, c)
        for di in range(3):
            for dj in range(3):
                padded[:, di:di + h, dj:dj + w] += z[:, :, :, di, dj]
        return padded[:, 1:-1, 1:-1].contiguous()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return _Im2col.apply(grad)


def conv_nhwc(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """F.conv2d(x, weight, bias, padding=k // 2) on channels-last x [B, H, W, C_in] -> [B, H, W, C_out],
    for k = 1 or 3, as GEMMs (see the module docstring)."""
    b, h, w, c_in = x.shape
    c_out, _, k, _ = weight.shape
    rows = b * h * w
    if k not in (1, 3):
        raise ValueError(f"conv_nhwc supports 1x1 and 3x3 kernels, got {k}x{k}")
    if k == 3 and c_in > c_out:  # col2im on the narrow output. A pixel p sends W[:, :, di, dj] x_p to
        # p - (di - 1, dj - 1), which is col2im's offset (2 - di, 2 - dj): hence the flipped kernel.
        sent = x.reshape(rows, c_in) @ weight.flip(2, 3).permute(1, 2, 3, 0).reshape(c_in, 9 * c_out)
        out = _Col2im.apply(sent.view(b, h, w, 3, 3, c_out))
        return out if bias is None else out + bias
    if k == 1:
        cols, matrix = x.reshape(rows, c_in), weight.view(c_out, c_in).t()
    else:  # im2col on the narrow input: [rows, 9 C_in] @ [9 C_in, C_out]
        cols, matrix = _Im2col.apply(x).reshape(rows, 9 * c_in), weight.permute(2, 3, 1, 0).reshape(9 * c_in, c_out)
    out = cols @ matrix if bias is None else torch.addmm(bias, cols, matrix)
    return out.view(b, h, w, c_out)
