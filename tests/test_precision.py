"""trainer.precision=auto (glow.precision): bf16-mixed only where the CPU has native bf16, and one line
saying which and why."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from glow.config import validate_trainer
from glow.errors import ConfigError
from glow.precision import cpu_flags, resolve_precision


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize("flags, chosen, named", [
    ({"avx2", "avx512f", "avx512_bf16"}, "bf16-mixed", "avx512_bf16"),
    ({"amx_bf16", "amx_tile"}, "bf16-mixed", "amx_bf16"),
    ({"avx2", "avx512f", "avx512bw"}, "32-true", "none of"),  # bf16 emulated: slower than fp32
    (set(), "32-true", "none of"),
])
def test_auto_is_bf16_only_with_native_bf16_on_a_cpu(flags, chosen, named):
    precision, line = resolve_precision("auto", "cpu", flags)
    assert precision == chosen and line.startswith(f"trainer.precision=auto: {chosen} (") and named in line
    assert "\n" not in line


def test_a_precision_given_is_kept_and_says_nothing():
    assert resolve_precision("32-true", "cpu", {"avx512_bf16"}) == ("32-true", None)
    assert resolve_precision("bf16-mixed", "cpu", set()) == ("bf16-mixed", None)


def test_auto_is_an_allowed_value_and_a_typo_is_one_line():
    validate_trainer(OmegaConf.create({"max_steps": 10, "precision": "auto", "accelerator": "cpu"}))
    with pytest.raises(ConfigError, match="trainer.precision='bf16'.*auto"):
        validate_trainer(OmegaConf.create({"max_steps": 10, "precision": "bf16", "accelerator": "cpu"}))
