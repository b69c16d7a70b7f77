"""Brute-force checks shared by the exactness tests (they live in the library: glow.exactness)."""

from glow.exactness import jacobian_logdet, perturb

__all__ = ["jacobian_logdet", "perturb"]
