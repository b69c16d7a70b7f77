"""Rebuilding a Glow from a train.py checkpoint (EMA weights when present)."""

from __future__ import annotations

from pathlib import Path

from glow.checkpoints import CheckpointError, read_checkpoint
from glow.families import build_model
from glow.model import Glow


def load_checkpoint(ckpt_path: str | Path, map_location: str = "cpu") -> dict:
    """The checkpoint dict (weights_only=True), or a one-line glow.checkpoints.CheckpointError."""
    return read_checkpoint(ckpt_path, map_location)


def load(ckpt_path: str | Path, use_ema: bool = True, map_location: str = "cpu") -> Glow:
    """Rebuild the Glow of a train.py checkpoint, with its EMA weights when it has them."""
    checkpoint = load_checkpoint(ckpt_path, map_location)
    try:
        return _rebuild(checkpoint, use_ema)
    except (TypeError, ValueError, RuntimeError, KeyError) as err:  # tampered or foreign contents
        raise CheckpointError(f"ckpt_path={str(ckpt_path)!r} does not rebuild a model: "
                              f"{type(err).__name__}: {str(err).strip().splitlines()[0][:160]}") from None


def _rebuild(checkpoint: dict, use_ema: bool) -> Glow:
    hparams = checkpoint["hyper_parameters"]
    model = build_model(hparams["model_config"])  # model_config["family"]: Glow unless named
    state = checkpoint["state_dict"]
    prefix = "ema.module." if use_ema and any(k.startswith("ema.module.") for k in state) else "model."
    # torch.compile wraps modules as `_orig_mod`; strip it so compiled and plain runs load alike
    weights = {k[len(prefix):].replace("_orig_mod.", ""): v for k, v in state.items() if k.startswith(prefix)}
    if prefix == "ema.module.":
        # the average holds parameters only; the buffers (ActNorm flags, permutations) are the live ones
        live = {k[len("model."):].replace("_orig_mod.", ""): v for k, v in state.items() if k.startswith("model.")}
        weights = {**{k: v for k, v in live.items() if k not in weights}, **weights}
    model.load_state_dict(weights)
    model.n_bits = int(hparams.get("n_bits", 8))
    return model.eval()
