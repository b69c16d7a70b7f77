"""Rebuilding the model of a train.py checkpoint (EMA weights when present), any family."""

from __future__ import annotations

from pathlib import Path

from glow.checkpoints import FORMAT_VERSION, format_version, model_weights, read_checkpoint
from glow.density import DensityModel
from glow.errors import CheckpointError, first_line
from glow.families import build_model


def load_checkpoint(ckpt_path: str | Path, map_location: str = "cpu") -> dict:
    """The checkpoint dict (weights_only=True), or a one-line glow.errors.CheckpointError."""
    return read_checkpoint(ckpt_path, map_location)


def load(ckpt_path: str | Path, use_ema: bool = True, map_location: str = "cpu") -> DensityModel:
    """Rebuild the model of a train.py checkpoint, with its EMA weights when it has them."""
    return rebuild(load_checkpoint(ckpt_path, map_location), ckpt_path, use_ema)


def rebuild(checkpoint: dict, ckpt_path: str | Path, use_ema: bool = True) -> DensityModel:
    """The model of an already-read checkpoint, in eval mode, or one line naming the file and the versions."""
    try:
        hparams = checkpoint["hyper_parameters"]
        model = build_model(hparams["model_config"])  # model_config["family"]: Glow unless named
        load_weights(model, model_weights(checkpoint, use_ema))
        model.n_bits = int(hparams.get("n_bits", 8))
    except (TypeError, ValueError, RuntimeError, KeyError) as err:  # tampered, foreign or older contents
        version = format_version(checkpoint)
        older = f" (written by checkpoint format {version}; this code writes {FORMAT_VERSION})" \
            if version != FORMAT_VERSION else ""
        raise CheckpointError(f"ckpt_path={str(ckpt_path)!r} does not rebuild a model{older}: "
                              f"{type(err).__name__}: {first_line(err)[:160]}") from None
    return model.eval()


def load_weights(model: DensityModel, weights: dict) -> None:
    """load_state_dict, with its multi-line complaint cut to the line that says what is wrong."""
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # "Error(s) in loading state_dict ...:" then one line per problem
        lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        raise ValueError(lines[0] if lines else first_line(err)) from None
    missing, unexpected = result.missing_keys, result.unexpected_keys
    if missing or unexpected:
        parts = ([f"{len(missing)} weights missing (first: {missing[0]})"] if missing else []) + \
                ([f"{len(unexpected)} unexpected (first: {unexpected[0]})"] if unexpected else [])
        raise ValueError(", ".join(parts))
