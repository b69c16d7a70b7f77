"""One step of Glow's flow: ActNorm -> permutation -> coupling (c-Glow's conditional_layers: ActNorm ->
conditional ActNorm -> conditional 1x1 conv -> coupling). ``PERMUTATIONS`` is the one table of permutations."""

from __future__ import annotations

from typing import Callable

from glow.flows.actnorm import ActNorm
from glow.flows.base import Flow
from glow.flows.cond_actnorm import ConditionalActNorm
from glow.flows.cond_conv1x1 import ConditionalInvConv1x1
from glow.flows.conv1x1 import InvConv1x1, InvConv1x1LU
from glow.flows.coupling import Coupling
from glow.flows.permute import Reverse, Shuffle

PERMUTATIONS: dict[str, Callable[[int, int], Flow]] = {
    "reverse": lambda channels, seed: Reverse(channels),
    "shuffle": lambda channels, seed: Shuffle(channels, seed),
    "conv": lambda channels, seed: InvConv1x1(channels),
    "conv_lu": lambda channels, seed: InvConv1x1LU(channels),
}


def step_layers(channels: int, step: int, hidden_channels: int, coupling: str, mask: str, actnorm: bool,
                permutation: str, conditional_layers: bool, feature_channels: int, seed: int,
                **coupling_options) -> list[Flow]:
    """The layers of step ``step`` (its parity alternates the coupling's halves) at ``channels``."""
    layers: list[Flow] = [ActNorm(channels)] if actnorm else []
    if conditional_layers:
        layers += [ConditionalActNorm(channels, feature_channels), ConditionalInvConv1x1(channels, feature_channels)]
    else:
        layers.append(PERMUTATIONS[permutation](channels, seed))
    layers.append(Coupling(channels, hidden_channels, coupling, mask, parity=step % 2,
                           cond_channels=feature_channels, **coupling_options))
    return layers
