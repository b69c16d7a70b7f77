"""Presets compose to what they say, or refuse in one line.

An experiment (conf/experiment/*.yaml, ``# @package _global_``) comes after the groups in train.yaml's
defaults list, so its keys override theirs: that is how it sizes its model. But it also overrode a model
the user picked on the command line: ``experiment=mnist_class model=realnvp`` trained additive couplings
on 4x4 steps, not RealNVP's affine ones, and said nothing. Here every key the experiment sets in a group
the user chose (``model=``, other than the experiment's own choice) is compared with what that option's
own file says (not what it inherits, and not its nulls, which mean "unset"); where they differ and the
user did not set the key too, the run stops with one line listing them, so the user chooses
(``model.coupling=affine``) instead of the defaults list choosing silently. Only the model group: a data
set's or trainer's batch size and step count are defaults an experiment is meant to replace.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from glow.errors import ConfigError

GROUPS = ("model",)   # the groups whose options say what they are (an architecture)


def _base_option(conf: Path, preset: DictConfig, group: str, primary: str) -> str | None:
    """The option of ``group`` the experiment is written for: its own ``override /group``, else the primary's."""
    for entry in preset.get("defaults", []) or []:
        if isinstance(entry, DictConfig) and f"override /{group}" in entry:
            return entry[f"override /{group}"]
    path = conf / f"{primary}.yaml"
    for entry in (OmegaConf.load(path).get("defaults", []) if path.is_file() else []) or []:
        if isinstance(entry, DictConfig) and group in entry:
            return entry[group]
    return None


def conflicts(conf: Path, choices: dict, overrides: list[str], primary: str = "train") -> list[str]:
    """``group.key=experiment's (option: its own)`` for each key the experiment overrides in a group chosen on
    the command line, where that option's own file says otherwise, unless the command line sets the key too."""
    experiment = choices.get("experiment")
    if not experiment or not (conf / "experiment" / f"{experiment}.yaml").is_file():
        return []
    preset = OmegaConf.load(conf / "experiment" / f"{experiment}.yaml")
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    found = []
    for group in GROUPS:
        option, sets = choices.get(group), preset.get(group)
        if group not in given or not isinstance(sets, DictConfig) or not (conf / group / f"{option}.yaml").is_file() \
                or option == _base_option(conf, preset, group, primary):
            continue
        own = OmegaConf.load(conf / group / f"{option}.yaml")
        for key, value in sets.items():
            if f"{group}.{key}" in given or key not in own or key == "defaults" or own[key] is None:
                continue
            if OmegaConf.to_container(OmegaConf.create({"v": value})) != \
                    OmegaConf.to_container(OmegaConf.create({"v": own[key]})):
                found.append(f"{group}.{key}={value} ({option}: {own[key]})")
    return found


def check_presets(conf: Path, choices: dict, overrides: list[str], primary: str = "train") -> None:
    """One line when an experiment would silently override a model chosen on the command line."""
    found = conflicts(conf, choices, overrides, primary)
    if found:
        experiment = choices["experiment"]
        groups = sorted({f.split(".")[0] for f in found})
        chosen = ", ".join(f"{g}={choices[g]}" for g in groups)
        key, theirs = found[-1].split("=", 1)[0], found[-1].rsplit(": ", 1)[-1].rstrip(")")
        raise ConfigError(f"{chosen} is not allowed with experiment={experiment} as it is: the experiment sets "
                          f"{', '.join(found)}, which would silently win; set each on the command line to choose "
                          f"(e.g. {key}={theirs} keeps {choices[groups[0]]}'s), or drop {chosen}")


def check_hydra_run() -> None:
    """check_presets for the running Hydra app (nothing to check outside one, e.g. under hydra.compose)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    conf = [s.path for s in hydra.runtime.config_sources if s.provider == "main" and s.schema == "file"]
    if conf:
        check_presets(Path(conf[0]), dict(hydra.runtime.choices), list(hydra.overrides.task), hydra.job.config_name)
