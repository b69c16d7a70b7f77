"""Rebuilding the model of a train.py checkpoint (EMA weights when present), any family."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from glow import families
from glow.checkpoints import FORMAT_VERSION, format_version, model_weights, read_checkpoint
from glow.density import DensityModel
from glow.errors import CheckpointError, first_line, is_int
from glow.families import build_model

# What a checkpoint's model_config may ask for before anything is allocated: a crafted one (n_bits=0,
# hidden_channels=10**6, steps=10**6, a 10**5-pixel image) would otherwise try to allocate 12-160 GB.
MAX_IMAGE_DIMS = 2 ** 22          # C x H x W (3 x 1024 x 1024 is 3.1M)
MAX_CONFIG_INT = 2 ** 16          # any size in the config: channels, hidden units, bins
DEPTH_KEYS = {"levels": 32, "steps": 4096, "num_layers": 4096, "flow_length": 4096, "hidden_layers": 256}
SLACK_WEIGHTS = 10 ** 6           # weights a model may hold beyond what the checkpoint stores (unsaved buffers)


def _ints(value, key: str = ""):
    """(key, int) of every integer in a nested config (image_shape left out: checked on its own)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in ("image_shape", "teacher_config"):
                yield from _ints(v, str(k))
            elif k == "teacher_config" and isinstance(v, dict):
                yield from _ints(v, "teacher_config")
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _ints(v, key)
    elif is_int(value):
        yield key, value


def check_sizes(checkpoint: dict, hparams: dict) -> None:
    """n_bits, the image shape and every size of the model_config are sane, and the model they describe (built
    on the meta device: nothing allocated) holds no more weights than the checkpoint stores; else ValueError."""
    n_bits, config = hparams.get("n_bits", 8), hparams["model_config"]
    if not (is_int(n_bits) and 1 <= n_bits <= 8):
        raise ValueError(f"n_bits={n_bits!r}: use 1..8")
    shape = config.get("image_shape")
    if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(is_int(d) and d >= 1 for d in shape)
            and shape[0] in (1, 3) and math.prod(shape) <= MAX_IMAGE_DIMS):
        raise ValueError(f"image_shape={shape!r}: want [1 or 3, H, W] with C*H*W <= {MAX_IMAGE_DIMS}")
    for key, value in _ints(config):
        limit = DEPTH_KEYS.get(key, MAX_CONFIG_INT)
        if value > limit:
            raise ValueError(f"model_config {key}={value}: at most {limit}")
    if families.family_of(config) != "distill":  # a distillation's check reads its teacher's file: not needed here
        families.check(config)
    with torch.device("meta"):
        sized = build_model(config)
    wanted = sum(t.numel() for t in (*sized.parameters(), *sized.buffers()))
    stored = sum(t.numel() for t in checkpoint.get("state_dict", {}).values() if isinstance(t, torch.Tensor))
    if wanted > 2 * stored + SLACK_WEIGHTS:
        raise ValueError(f"its model_config describes {wanted:,} weights but it stores {stored:,}")


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
        check_sizes(checkpoint, hparams)  # before anything is allocated
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
