"""Model families: ``model.family`` picks the class train.py builds and glow.sampling.load rebuilds.

    glow     glow.model.Glow (the default: configs and checkpoints without the key are Glow)
    vae      glow.vae.VAE: flow posteriors (planar, radial, Sylvester, IAF) on binarised images
    maf      glow.autoregressive.MAFModel: density in one pass
    iaf      glow.autoregressive.IAFModel: sampling in one pass
    distill  glow.distill.Distill: an IAF student distilled from a MAF teacher checkpoint

Every family is a glow.density.DensityModel; docs/architecture.md ("Model families") says what each can do.
Adding a family: its module, a row in CLASSES, and (if some check needs more than its constructor)
a row in CHECKS.
"""

from __future__ import annotations

import inspect
from typing import Any

from glow import autoregressive, distill, vae
from glow.checkpoints import read_checkpoint
from glow.density import DensityModel
from glow.errors import CheckpointError
from glow.model import Glow
from glow.model_args import check_arguments as check_glow_arguments

CLASSES = {"glow": Glow, "vae": vae.VAE, "maf": autoregressive.MAFModel, "iaf": autoregressive.IAFModel,
           "distill": distill.Distill}
CHECKS = {"glow": check_glow_arguments, "vae": vae.check_arguments, "maf": autoregressive.check_arguments,
          "iaf": autoregressive.check_arguments, "distill": distill.check_arguments}


def family_of(model_config) -> str:
    family = model_config.get("family") or "glow"
    if family not in CLASSES:
        raise ValueError(f"model.family={family!r} is not allowed: use one of {', '.join(CLASSES)}")
    return family


def arguments(model_config) -> dict[str, Any]:
    return {k: v for k, v in dict(model_config).items() if k != "family"}


def check_keys(model_config) -> str:
    """The family's name, or a one-line ValueError for the first key its constructor does not take."""
    family = family_of(model_config)
    known = set(inspect.signature(CLASSES[family]).parameters)
    unknown = [k for k in arguments(model_config) if k not in known]
    if unknown:
        value = model_config[unknown[0]]
        raise ValueError(f"model.{unknown[0]}={value!r} is not allowed: model.family={family} takes "
                         f"{', '.join(sorted(known - {'image_shape', 'teacher_config'}))}")
    return family


def check(model_config) -> None:
    """A config's model keys, before anything is built or read: unknown keys, then bad values (including
    what only a new run needs, such as a distillation teacher's checkpoint file)."""
    family = check_keys(model_config)
    check_values = CHECKS[family]
    takes = inspect.signature(check_values).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in takes.values())
    values = {**defaults(model_config), **arguments(model_config)}  # each default is written once: the class's
    check_values(**{k: v for k, v in values.items() if takes_all or k in takes})


def build_model(model_config: dict) -> DensityModel:
    """The family's model; an unknown key is a one-line ValueError, and its constructor checks the values."""
    return CLASSES[check_keys(model_config)](**arguments(model_config))


def defaults(model_config: dict) -> dict:
    """The constructor defaults of the config's family (fills keys an older checkpoint does not name)."""
    cls = CLASSES[family_of(model_config)]
    return {k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}


def complete_config(model_config: dict) -> dict:
    """What the config takes from elsewhere: a distillation run its teacher's architecture (from teacher_ckpt)."""
    if family_of(model_config) != "distill":
        return model_config
    path = model_config.get("teacher_ckpt")
    if path is None:
        raise ValueError("teacher_ckpt=None is not allowed: give the checkpoint of a MAF run, "
                         "e.g. teacher_ckpt=outputs/maf_mnist/<run>/checkpoints/last.ckpt")
    try:
        teacher = read_checkpoint(path)["hyper_parameters"]["model_config"]
    except CheckpointError as err:  # its message names ckpt_path; this key is teacher_ckpt
        raise ValueError(str(err).replace("ckpt_path=", "teacher_ckpt=", 1)) from None
    return {**model_config, "teacher_config": teacher}
