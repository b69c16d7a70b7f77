"""Glow's constructor arguments that need no image: the allowed values and their one-line checks.

Glow() (glow.model) and glow.families.check both call ``check_arguments``, so each check is written
once, and a config error names ``model.<key>``, its value and what is allowed. Its defaults are Glow's
constructor's: glow.families.check fills them in.
"""

from __future__ import annotations

from typing import Sequence

from glow.conditioning import Kind
from glow.flows.coupling import check_coupling_arguments
from glow.flows.memory import MEMORY_MODES
from glow.glow_step import PERMUTATIONS

# model.observed_noise; the booleans are the names of older checkpoints: true = uniform, false = none
OBSERVED_NOISE = ("none", "uniform", "gaussian")
COND_ENCODERS = ("cnn", "unet")
# arguments that change how the model runs, not what it computes: a checkpoint resumes under any of them
RUNTIME_ARGUMENTS = ("memory", "compile", "channels_last")


def _choice(name: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        shown = ", ".join("null" if a is None else str(a) for a in allowed)
        raise ValueError(f"model.{name}={value!r} is not allowed: use one of {shown}")


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"model.{name}={value!r} is not allowed: use a positive integer")


def check_arguments(levels, steps, hidden_channels, spline_bins, coupling, permutation, mask, conditional,
                    num_classes, class_head, affine_scale, cond_encoder, conditional_layers, observed_noise,
                    memory, compile, channels_last, hole_predictor, prior_log_std_bound, hole_hypotheses=1,
                    hole_features=False, coupling_input_bound=None) -> Kind:
    """The argument checks of Glow that need no image: one-line ValueErrors naming ``model.<arg>``."""
    for name, value in [("levels", levels), ("steps", steps), ("hidden_channels", hidden_channels),
                        ("spline_bins", spline_bins)]:
        _positive_int(name, value)
    check_coupling_arguments(coupling, mask, affine_scale)
    _choice("permutation", permutation, PERMUTATIONS)
    _choice("cond_encoder", cond_encoder, COND_ENCODERS)
    _choice("conditional_layers", conditional_layers, (False, True))
    _choice("memory", memory, MEMORY_MODES)
    _choice("compile", compile, (False, True))
    for name, bound in (("prior_log_std_bound", prior_log_std_bound), ("coupling_input_bound", coupling_input_bound)):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 0 < bound < 80):
            raise ValueError(f"model.{name}={bound!r} is not allowed: use a number in (0, 80), or null "
                             f"(Glow: unbounded)")
    _choice("channels_last", channels_last, (False, True))
    kind = Kind.of(conditional, num_classes, class_head)
    _choice("observed_noise", observed_noise, OBSERVED_NOISE + (False, True))
    _choice("hole_predictor", hole_predictor, (False, True))
    _positive_int("hole_hypotheses", hole_hypotheses)
    _choice("hole_features", hole_features, (False, True))
    if not hole_predictor and (hole_hypotheses != 1 or hole_features):
        name, value = ("hole_hypotheses", hole_hypotheses) if hole_hypotheses != 1 else ("hole_features", hole_features)
        raise ValueError(f"model.{name}={value!r} is not allowed with model.hole_predictor={hole_predictor!r}: "
                         "it needs model.hole_predictor=true")
    for name, value in (("conditional_layers", conditional_layers), ("observed_noise", observed_noise),
                        ("hole_predictor", hole_predictor)):
        if value not in (False, "none") and not kind.image:
            raise ValueError(f"model.{name}={value!r} is not allowed with model.conditional={conditional!r}: "
                             f"it needs model.conditional=image")
    return kind
