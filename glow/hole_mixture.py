"""The c-Glow's hole predictor inside Glow (``model.hole_predictor``, ``hole_hypotheses``,
``hole_features``): a mixin of Glow's methods that choose a hypothesis and turn it into the flow's
condition and hole shift (glow.hole_predictor has the model and why).

Component k of the mixture is the flow with the hole shift m * mu_k(c) (glow.flows.hole_shift) and,
with ``hole_features``, the condition encoder's input (masked image, hole, mu_k(c)). Which component:

* ``log_prob``: all of them, p(x | c) = sum_k pi_k(c) p_k(x | c) (exact; K passes when K > 1);
* training (``log_prob_and_hole_prediction``): the winner, the hypothesis nearest x over the hole;
* ``encode`` / ``decode``: each image's most likely one (argmax pi), so decode(encode(x)) is exact;
* sampling (``decode_noise``): k ~ pi(c), one draw per sample.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glow.hole_predictor import hole_errors


class HoleMixture:
    """Glow's hole-predictor methods (Glow sets ``hole_predictor``, a submodule or None, and ``hole_features``;
    no class attributes here: they would hide nn.Module's registered submodule)."""

    @property
    def hole_hypotheses(self) -> int:
        return self.hole_predictor.hypotheses if self.hole_predictor is not None else 0

    def hole_prediction(self, cond: Tensor) -> Tensor:
        """The mixture's mean prediction sum_k pi_k(c) mu_k(c) [B, C, H, W]."""
        if self.hole_predictor is None:
            raise ValueError("this model has no hole predictor: build it with hole_predictor=True")
        mu, log_weights = self.hole_predictor(cond)
        return (mu * log_weights.exp().to(mu.dtype)[:, :, None, None, None]).sum(1)

    def _hole_inputs(self, cond: Tensor | None, component: Tensor | None = None,
                     predictions: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor | None, Tensor | None]:
        """(the condition encoder's input, the hole shift m * mu_k(c) or None) for the components
        ``component`` [B] (None: each image's most likely); mu enters with its gradient stopped."""
        if self.hole_predictor is None:
            return cond, None
        mu, log_weights = predictions if predictions is not None else self.hole_predictor(cond)
        if component is None:
            component = log_weights.argmax(1)
        chosen = mu[torch.arange(mu.shape[0], device=mu.device), component].detach()
        encoder_input = torch.cat([cond, chosen.to(cond.dtype)], 1) if self.hole_features else cond
        return encoder_input, chosen * cond[:, -1:]  # cond's last channel is the hole (glow.conditioning)

    def _mixture_log_prob(self, x: Tensor, cond: Tensor) -> Tensor:
        """log sum_k pi_k(c) p_k(x | c), one pass per component."""
        predictions = self.hole_predictor(cond)
        log_weights = predictions[1]
        parts = []
        for k in range(log_weights.shape[1]):
            component = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
            _, logdet, log_prior = self._encode(x, cond, component=component, predictions=predictions)
            parts.append(log_prior + logdet + log_weights[:, k].to(logdet.dtype))
        return torch.logsumexp(torch.stack(parts, 1), dim=1)

    def log_prob_and_hole_prediction(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log pi_k* + log p_k*(x | c), a lower bound of log_prob that equals it when K = 1; the live
        hypotheses mu [B, K, C, H, W]; the winner k* [B]), from one pass of the flow."""
        predictions = self.hole_predictor(cond)
        mu, log_weights = predictions
        winner = hole_errors(mu.detach(), x, cond[:, -1:]).argmin(1)
        _, logdet, log_prior = self._encode(x, cond, component=winner, predictions=predictions)
        return log_prior + logdet + log_weights.gather(1, winner[:, None])[:, 0].to(logdet.dtype), mu, winner

    def sample_components(self, cond: Tensor, generator: torch.Generator | None = None, group: int = 1
                          ) -> Tensor | None:
        """k ~ pi(c), one per row of cond (None without a predictor). ``group`` > 1: the rows come in groups
        of that many with one condition (the n completions of an image), whose draws are stratified:
        u_j = (sigma(j) + U) / group for a random permutation sigma and one U ~ U[0, 1) per group, then
        k_j = the inverse CDF of pi at u_j. Each u_j is uniform, so every draw is still exactly k ~ pi(c),
        but a group covers the components as evenly as their weights allow (fewer repeats)."""
        if self.hole_predictor is None:
            return None
        _, log_weights = self.hole_predictor(cond)
        if log_weights.shape[1] == 1:
            return torch.zeros(cond.shape[0], dtype=torch.long, device=cond.device)
        weights = log_weights.float().exp().cpu()
        rows = weights.shape[0]
        if group <= 1 or rows % group:
            return torch.multinomial(weights, 1, generator=generator)[:, 0].to(cond.device)
        offsets = torch.rand(rows // group, 1, generator=generator).expand(-1, group)
        strata = torch.stack([torch.randperm(group, generator=generator) for _ in range(rows // group)]).float()
        u = ((strata + offsets) / group).reshape(rows, 1)
        cdf = weights.cumsum(1)
        draws = torch.searchsorted(cdf / cdf[:, -1:], u, right=True)[:, 0].clamp_max(weights.shape[1] - 1)
        return draws.to(cond.device)
