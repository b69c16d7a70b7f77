"""A run's config, read back: what train.py saved, with the overrides given now applied on top.

train.py's run directory holds the run's config (``.hydra/config.yaml``, and in ``.hydra/hydra.yaml``
the group choices it was composed from); every checkpoint also records the run's data config
(``RunConfigRecord``), so a checkpoint copied without its directory still knows its data. Two users:

* a resumed run (glow.resume): the saved config, with the overrides given now on top;
* sample.py, the evaluate scripts and the web page: the data set, image size and layout of the
  checkpoint's run (``data_config_for``), unless ``data`` keys are given on the command line. The
  bit depth and conditioning come with the model itself (glow.sampling.load).

``reapply`` is the one rule for "on top": a key given now (``a.b=v``, ``+a.b=v``, ``~a.b``) takes its
value as composed now; a group given now (``data=imagefolder``) keeps the saved node when it is the
group the run was composed with, and takes the node composed now when it is another; a group that
sets keys everywhere (``experiment``, ``debug``) cannot change, since its keys cannot be told apart.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from glow.errors import ConfigError

DATA_TARGETS = ("glow.data.ImageDataModule",)  # what a saved data config may instantiate, nothing else
RECORD_KEY = "RunConfigRecord"


def run_dir_of(ckpt_path: str | Path) -> Path:
    """train.py writes <run dir>/checkpoints/<name>.ckpt."""
    ckpt_path = Path(ckpt_path)
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent


def read_yaml(path: Path) -> DictConfig | None:
    """A saved config file, None when there is none, or one line naming a damaged one."""
    if not path.is_file():
        return None
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # a YAML or OmegaConf error of any kind: the file is damaged
        raise ConfigError(f"{path} cannot be read ({type(err).__name__}): repair or remove it") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path} is not a config (a mapping): repair or remove it")
    return cfg


def saved_run(run_dir: str | Path) -> tuple[DictConfig | None, dict]:
    """(the run's .hydra/config.yaml or None, its group choices such as {"data": "imagefolder"})."""
    hydra_dir = Path(run_dir) / ".hydra"
    config = read_yaml(hydra_dir / "config.yaml")
    meta = read_yaml(hydra_dir / "hydra.yaml") if config is not None else None
    choices = OmegaConf.select(meta, "hydra.runtime.choices", default=None) if meta is not None else None
    return config, (OmegaConf.to_container(choices) if isinstance(choices, DictConfig) else {})


def given_overrides() -> list[str] | None:
    """The overrides on this command line; None when not run by Hydra (a caller's composed config)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def plain_value(cfg: DictConfig, key: str):
    """The value at ``key`` as composed, interpolations unresolved (``${paths.data_dir}`` stays so)."""
    value = OmegaConf.to_container(cfg, resolve=False)
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _name_of(node) -> str | None:
    return node.get("name") if isinstance(node, DictConfig) else None


def reapply(saved: DictConfig, current: DictConfig, overrides: list[str], choices: dict) -> DictConfig:
    """``saved`` with ``overrides`` (as composed into ``current``) applied on top; module docstring."""
    result = OmegaConf.create(OmegaConf.to_container(saved, resolve=False))
    parser = OverridesParser.create()
    keys = []
    for text in overrides:
        override = parser.parse_override(text)
        key = override.key_or_group
        if key.startswith("hydra") or override.package:
            continue
        option = override.value()
        if "." not in key and not override.is_delete() and isinstance(option, str) and \
                (key not in current or isinstance(current.get(key), DictConfig)):
            before = choices.get(key, _name_of(saved.get(key)))
            if before is None or before == option:
                continue  # the group the run was composed with: its saved node holds what was set then
            if key not in current:
                raise ConfigError(f"{key}={option} is not allowed here: the run was composed with {key}={before}, "
                                  f"whose settings are in its saved config; drop {key}= (give single keys instead)")
            result[key] = OmegaConf.to_container(current[key], resolve=False)
        else:
            keys.append((key, override.is_delete()))
    for key, delete in keys:
        parent, _, leaf = key.rpartition(".")
        if delete:
            container = OmegaConf.select(result, parent) if parent else result
            if isinstance(container, DictConfig) and leaf in container:
                del container[leaf]
        else:
            OmegaConf.update(result, key, plain_value(current, key), merge=False, force_add=True)
    return result


# -- scripts: the data of a checkpoint's run -----------------------------------------------------------------
class RunConfigRecord(L.Callback):
    """Keeps the run's data config in every checkpoint, for the scripts that read it back. Resolved (a
    standalone node has no ``seed`` or ``paths`` to point at): the values the run used."""

    def __init__(self, data: DictConfig):
        self.data = OmegaConf.to_container(data, resolve=True)

    def state_dict(self) -> dict:
        return {"data": self.data}

    def load_state_dict(self, state_dict: dict) -> None:
        pass  # this run's own data config stands


def recorded_data(checkpoint: dict | None) -> DictConfig | None:
    state = ((checkpoint or {}).get("callbacks") or {}).get(RECORD_KEY)
    data = state.get("data") if isinstance(state, dict) else None
    return OmegaConf.create(data) if isinstance(data, dict) else None


def run_data_node(ckpt_path: str | Path, checkpoint: dict | None = None) -> tuple[DictConfig | None, dict]:
    """(the data config of the checkpoint's run: its .hydra/config.yaml, else the checkpoint's record;
    the run's group choices). Only a data module of ours may be named there."""
    saved, choices = saved_run(run_dir_of(ckpt_path))
    node = saved.get("data") if saved is not None else None
    if not isinstance(node, DictConfig):
        node, choices = recorded_data(checkpoint), {}
    if node is not None and node.get("_target_") not in (None, *DATA_TARGETS):
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r}: its run's data config names _target_="
                          f"{node.get('_target_')!r}, which is not allowed: only {', '.join(DATA_TARGETS)}")
    return node, choices


def data_config_for(cfg: DictConfig, ckpt_path: str | Path, checkpoint: dict | None = None,
                    image_shape=None, overrides: list[str] | None = None) -> DictConfig:
    """The data config a script should use for a checkpoint: its run's, with the ``data`` keys given
    now on top. With no run config at all, this script's own, at the model's image size. Called with
    no command line (``overrides`` None and not run by Hydra), the caller's config is taken as given."""
    overrides = given_overrides() if overrides is None else overrides
    if overrides is None:
        return cfg.data
    data_overrides = [o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0] == "data"]
    node, choices = run_data_node(ckpt_path, checkpoint)
    if node is None:
        data = OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=False))
        named = {o.lstrip("+~").split("=")[0] for o in data_overrides}
        if image_shape is not None and "data.image_size" not in named and "image_size" in data:
            data.image_size = int(image_shape[-1])
        return data
    return reapply(OmegaConf.create({"data": node}), cfg, data_overrides, choices).data


def use_run_data(cfg: DictConfig, ckpt_path: str | Path, checkpoint: dict | None = None, image_shape=None) -> None:
    """Set ``cfg.data`` to ``data_config_for``'s answer (interpolations resolve against ``cfg``)."""
    data = data_config_for(cfg, ckpt_path, checkpoint, image_shape)
    with open_dict(cfg):
        cfg.data = data


# -- scripts that reuse a finished run (vae_table.py, learning_curve.py) ----------------------------------
def settings_differ(run_dir: str | Path, overrides: list[str], ignore: tuple[str, ...] = ()) -> list[tuple]:
    """(key, the run's value, the wanted value) for each override the run's saved config does not match
    (a group by the choice it was composed with); one entry naming .hydra/config.yaml when the run saved
    no config, so its settings cannot be told."""
    saved, choices = saved_run(run_dir)
    if saved is None:
        return [(".hydra/config.yaml", "absent", "a run whose settings can be checked")]
    differ = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key.startswith("hydra") or key.split(".")[0] in ignore or key in ignore:
            continue
        wanted = None if override.is_delete() else override.value()
        if "." not in key and key in choices and isinstance(wanted, str):
            have = choices[key]
        else:
            have = OmegaConf.select(saved, key, default=None, throw_on_resolution_failure=False)
            have = OmegaConf.to_container(have) if isinstance(have, (DictConfig, ListConfig)) else have
        if have != wanted and not (isinstance(have, (int, float)) and isinstance(wanted, (int, float))
                                   and float(have) == float(wanted)):
            differ.append((key, have, wanted))
    return differ
