"""Glow, RealNVP and NICE normalizing flows with exact log-likelihoods."""

from glow.model import Glow

__all__ = ["Glow", "load"]


def load(ckpt_path: str, use_ema: bool = True, map_location: str = "cpu") -> Glow:
    """Load a Glow from a train.py checkpoint (EMA weights when present). See glow.sampling.load."""
    from glow.sampling import load as _load

    return _load(ckpt_path, use_ema=use_ema, map_location=map_location)
