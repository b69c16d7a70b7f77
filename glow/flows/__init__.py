"""Invertible layers sharing one interface: forward/inverse(x, cond=None) -> (y, logdet[B])."""

from glow.flows.actnorm import ActNorm, DiagonalScale
from glow.flows.base import Flow, FlowSequence
from glow.flows.cond_actnorm import ConditionalActNorm
from glow.flows.cond_conv1x1 import ConditionalInvConv1x1
from glow.flows.conv1x1 import InvConv1x1, InvConv1x1LU
from glow.flows.coupling import Coupling
from glow.flows.permute import Permutation, Reverse, Shuffle
from glow.flows.squeeze import Squeeze

__all__ = ["ActNorm", "ConditionalActNorm", "ConditionalInvConv1x1", "DiagonalScale", "Flow", "FlowSequence", "InvConv1x1", "InvConv1x1LU", "Coupling",
           "Permutation", "Reverse", "Shuffle", "Squeeze"]
