"""Glow's training objectives beyond bits/dim, each from one pass (``Glow.objective`` picks one):

* a class head (model.class_head, module.classifier_weight): Glow's ``bits_x + weight_y * bits_y``;
* a hole predictor (model.hole_predictor, module.hole_regression_weight): c-Glow's flow on the residual
  around mu(c) (or a mixture over K hypotheses mu_k(c)), the hypotheses fit by squared error only
  (glow.hole_predictor).

log_prob and the reported bits/dim are unchanged by either.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from glow.density import ModelInputs
from glow.hole_predictor import regression_loss
from glow.quantize import bits_per_dim


def with_classifier(model, inputs: ModelInputs, weight: float) -> tuple[Tensor, dict[str, Tensor]]:
    """bits/dim + weight * the class head's cross-entropy in bits per image."""
    log_prob, logits = model.log_prob_and_logits(inputs.x, inputs.cond)
    bpd = bits_per_dim(inputs.bound(log_prob), model.num_dims, inputs.n_bits).mean().float()
    class_bits = F.cross_entropy(logits.float(), inputs.labels) / math.log(2.0)
    accuracy = (logits.argmax(1) == inputs.labels).float().mean()
    return bpd + weight * class_bits, {"bpd": bpd, "class_bits": class_bits, "class_acc": accuracy}


def with_hole_regression(model, inputs: ModelInputs, weight: float) -> tuple[Tensor, dict[str, Tensor]]:
    """bits/dim + weight * the hole predictor's squared error over the hole, in model space (relaxed
    winner-takes-all over K hypotheses; glow.hole_predictor). With K > 1 the bits/dim are those of the
    winner's component and its weight, an upper bound of the mixture's (glow.hole_mixture)."""
    x = inputs.x
    log_prob, hypotheses, winner = model.log_prob_and_hole_prediction(x, inputs.cond)
    bpd = bits_per_dim(inputs.bound(log_prob), model.num_dims, inputs.n_bits).mean().float()
    mse = regression_loss(hypotheses, x, inputs.hole, winner)
    return bpd + weight * mse, {"bpd": bpd, "hole_mse": mse}
