"""``trainer.precision=auto``: bf16-mixed where this machine runs bf16 natively, 32-true elsewhere.

On a CPU, bf16 pays only with native bf16 dot products (x86 ``avx512_bf16`` or ``amx_bf16``): there a
bf16 convolution runs 1.6-1.9x an fp32 one, and at a fixed time budget the default MNIST run reaches a
lower bits/dim in bf16 (docs/performance.md). Without them oneDNN emulates bf16 and it is slower than
fp32. On a CUDA GPU, bf16-mixed where the card supports bf16 (Ampere and later). Autocast keeps the
exact parts in float32 either way: logdets, priors, the dequantised input and the loss.
"""

from __future__ import annotations

from pathlib import Path

import torch

AUTO = "auto"
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def native_bf16(accelerator: str, flags: set[str] | None = None) -> tuple[bool, str]:
    """(whether bf16 runs natively on this accelerator, why) for ``trainer.accelerator``."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return True, f"{torch.cuda.get_device_name()} supports bf16"
        return False, "this GPU has no bf16"
    found = sorted((cpu_flags() if flags is None else flags) & set(NATIVE_BF16_FLAGS))
    if found:
        return True, f"the CPU has {', '.join(found)}"
    return False, f"the CPU has none of {', '.join(NATIVE_BF16_FLAGS)}"


def resolve_precision(precision: str, accelerator: str, flags: set[str] | None = None) -> tuple[str, str | None]:
    """(the precision Lightning gets, the one line saying why when ``precision`` was auto)."""
    if str(precision) != AUTO:
        return precision, None
    fast, why = native_bf16(str(accelerator), flags)
    chosen = "bf16-mixed" if fast else "32-true"
    return chosen, f"trainer.precision=auto: {chosen} ({why})"
