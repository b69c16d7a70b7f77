"""The entry points' command line: ``--help`` that runs nothing, and every composition error (an unknown key,
a group option that does not exist, an override Hydra cannot parse) as ONE line with exit code 2.

    if __name__ == "__main__":
        hydra_entry(main, "train", CONF)          # a Hydra entry point (train.py, sample.py, the scripts)
    cli, cfg = parse_cli(defaults, "benchmark", CONF)   # a plain OmegaConf key=value script

Hydra prints its own composition errors over several lines and exits 1; here they are raised to us
(HYDRA_FULL_ERROR) and become ``config error: <one line>``. Errors inside a run are the run's to report
(glow.errors.exit_with_config_error); anything unexpected keeps its traceback.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path
from typing import Callable

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from glow.errors import exit_with_config_error
from glow.help import help_text

HELP_FLAGS = ("--help", "-h")


def wants_help(argv: list[str]) -> bool:
    return any(a in HELP_FLAGS for a in argv)


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def print_help(text: str) -> None:
    """Print a help page and exit 0 (quietly when the reader, e.g. ``| head``, closes the pipe early)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        sys.stdout = None  # nothing more can be written; skip Python's flush at exit
    raise SystemExit(0)


def _dotted_keys(cfg, prefix: str = "") -> list[str]:
    return [k for key, value in cfg.items() for k in
            (_dotted_keys(value, f"{prefix}{key}.") if isinstance(value, DictConfig) else [f"{prefix}{key}"])]


def _top_level_names(conf: Path, config: str) -> list[str]:
    """The keys and groups of conf/<config>.yaml, for a did-you-mean."""
    names = [p.name for p in conf.iterdir() if p.is_dir()] if conf.is_dir() else []
    path = conf / f"{config}.yaml"
    if path.is_file():
        names += re.findall(r"^([A-Za-z_]\w*):", path.read_text(), flags=re.M)
    return names


def _group_keys(conf: Path, group: str) -> list[str]:
    """The top-level keys of every option of a conf group (model: levels, steps, ...)."""
    return sorted({k for p in (conf / group).glob("*.yaml") for k in re.findall(r"^([A-Za-z]\w*):", p.read_text(),
                                                                                flags=re.M)})


def did_you_mean(key: str, conf: Path, config: str) -> str:
    """`` (did you mean model.steps?)`` for ``modle.steps`` or ``model.stpes``, from conf/'s files; or ""."""
    head, _, rest = key.partition(".")
    tops = _top_level_names(conf, config)
    if head in tops and rest and (conf / head).is_dir():
        close = difflib.get_close_matches(rest.split(".")[0], _group_keys(conf, head), n=1)
        return f" (did you mean {head}.{close[0]}?)" if close else ""
    heads = difflib.get_close_matches(head, tops, n=3)
    if rest:  # prefer the group that has the rest of the key: modle.steps -> model, not module
        heads = sorted(heads, key=lambda h: rest.split(".")[0] not in ((conf / h).is_dir() and _group_keys(conf, h)
                                                                     or []))
    return f" (did you mean {'.'.join([heads[0], rest]) if rest else heads[0]}?)" if heads else ""


def composition_message(err: BaseException, conf: Path | None = None, config: str = "") -> str:
    """Hydra's multi-line composition error as one line naming the override and what to do."""
    text = str(err)
    unknown = re.match(r"Could not override '([^']+)'\.\s*To append to your config use \+(\S+)", text)
    if unknown:
        key, override = unknown.groups()
        hint = did_you_mean(key, conf, config) if conf is not None else ""
        return (f"{override} is not allowed: there is no key {key} in this config{hint}; "
                f"--help lists the keys (a new key needs a leading +, e.g. +{override})")
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if isinstance(err, MissingConfigException) and missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], flags=re.M)
        return f"{group}={option} is not allowed: use one of {', '.join(options)}" if options else \
            f"{group}={option} is not allowed: conf/{group}/ has no {option}.yaml"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("See https")]
    if isinstance(err, OverrideParseException):
        return (f"an override cannot be parsed: {lines[0] if lines else text} (Hydra's override grammar: quote a "
                f"value holding = , [ ] or spaces, e.g. 'key=\"a=b\"')")
    return " ".join(lines)[:400] or type(err).__name__


def hydra_entry(main: Callable[[], object], page: str, conf: Path) -> None:
    """Run a @hydra.main function: --help prints ``page`` (glow.help) and exits 0 without composing anything;
    a composition error is one line and exit code 2."""
    if wants_help(sys.argv[1:]):
        print_help(help_text(page, conf))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its composition errors to us instead of printing them
    try:
        main()
    except (ConfigCompositionException, OverrideParseException) as err:  # MissingConfigException is one of them
        exit_with_config_error(composition_message(err, conf, page))


def parse_cli(defaults: DictConfig, page: str, conf: Path, argv: list[str] | None = None,
              choices: dict[str, list[tuple[str, str]]] | None = None) -> tuple[DictConfig, DictConfig]:
    """(the command line's keys, defaults merged with them) of a plain key=value script: --help prints
    ``page``; an unknown key or a value of the wrong type is one line and exit code 2."""
    argv = sys.argv[1:] if argv is None else argv
    if wants_help(argv):
        print_help(help_text(page, conf, choices))
    bad = [a for a in argv if "=" not in a or a.startswith("-")]
    if bad:
        exit_with_config_error(f"{bad[0]} is not allowed: give KEY=VALUE pairs (--help lists the keys)")
    try:
        cli = OmegaConf.from_dotlist(argv)
        strict = OmegaConf.create(OmegaConf.to_container(defaults))
        OmegaConf.set_struct(strict, True)
        return cli, OmegaConf.merge(strict, cli)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        given = next((a for a in argv if a.split("=", 1)[0] == key or a.startswith(key + ".")), key)
        name = given.split("=", 1)[0]
        why = (f"there is no key {name}{_suggest(name, _dotted_keys(defaults))}; --help lists the keys"
               if "not in struct" in str(err) else str(err).splitlines()[0])
        exit_with_config_error(f"{given} is not allowed: {why}")
