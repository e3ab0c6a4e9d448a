"""Config composition: defaults + method + data + trainer + logger + experiment + command line.

The config tree lives in `configs/` (next to this package in a source checkout). `train.yaml` and
`eval.yaml` carry a `defaults` list naming one file per group::

    defaults:
      method: gaussian_avatar     # configs/method/gaussian_avatar.yaml -> cfg.method
      data: synthetic             # configs/data/synthetic.yaml         -> cfg.data
      trainer: cpu                # configs/trainer/cpu.yaml            -> cfg.trainer
      logger: wandb               # configs/logger/wandb.yaml           -> cfg.logger
      experiment: null            # configs/experiment/<name>.yaml, merged at the root (deltas only)

Command-line arguments are `group=name` (pick a file) or `dotted.key=value` (set a value). Setting a
key that no config defines is an error listing the valid keys at that level.

An experiment preset may choose the files of the other groups with its own `defaults` mapping
(e.g. `defaults: {method: exavatar, data: x_humans}`); a `group=name` on the command line wins.
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

GROUPS = ("method", "data", "trainer", "logger", "experiment")


class ConfigError(ValueError):
    """A config file or command-line override that cannot be applied."""


def config_dir() -> Path:
    """The folder holding train.yaml and the group folders (env ZOO_CONFIG_DIR overrides)."""
    env = os.environ.get("ZOO_CONFIG_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "configs"


def _now(fmt: str = "%Y%m%d-%H%M%S") -> str:
    return _dt.datetime.now().strftime(fmt)


if not OmegaConf.has_resolver("now"):
    OmegaConf.register_new_resolver("now", _now, use_cache=True)


def _load_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return cfg


def available(group: str) -> List[str]:
    """Names of the files of a config group (without .yaml)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _group_file(group: str, name: str) -> DictConfig:
    path = config_dir() / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown {group} {name!r}; choose one of: {', '.join(available(group))}")
    return _load_yaml(path)


def _parse_override(arg: str) -> tuple[str, str]:
    if "=" not in arg:
        raise ConfigError(f"malformed argument {arg!r}: expected key=value (e.g. method=gaussian_avatar)")
    key, value = arg.split("=", 1)
    key = key.strip().lstrip("+")
    if not key:
        raise ConfigError(f"malformed argument {arg!r}: empty key")
    return key, value


def _check_key(cfg: DictConfig, dotted: str) -> None:
    """Raise ConfigError unless `dotted` names an existing key (maps may be extended under *options*)."""
    node: Any = cfg
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, DictConfig):
            if part not in list(node.keys()):
                parent = ".".join(parts[:i]) or "<root>"
                # free-form maps: parser options, extra tags
                if parts[i - 1:i] and parts[i - 1] in ("options", "tags", "extra"):
                    return
                valid = ", ".join(sorted(str(k) for k in node.keys()))
                raise ConfigError(f"unknown config key {dotted!r}: {parent} has no {part!r}; valid keys: {valid}")
            node = node[part] if not OmegaConf.is_missing(node, part) else None
        elif isinstance(node, ListConfig):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"unknown config key {dotted!r}: index {part!r} out of range")
            node = node[int(part)]
        else:
            parent = ".".join(parts[:i])
            raise ConfigError(f"unknown config key {dotted!r}: {parent} is a value, not a section")


def apply_overrides(cfg: DictConfig, overrides: Iterable[str] | Mapping[str, Any]) -> DictConfig:
    """Set dotted keys on `cfg` (strict: unknown keys raise ConfigError)."""
    items = overrides.items() if isinstance(overrides, Mapping) else (_parse_override(o) for o in overrides)
    for key, value in items:
        _check_key(cfg, key)
        if isinstance(value, str):
            try:
                parsed = OmegaConf.from_dotlist([f"{key}={value}"])
            except Exception as err:  # yaml's ScannerError/ParserError and OmegaConf's grammar errors
                problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
                raise ConfigError(
                    f"malformed value for {key}: {value!r} ({problem}); expected a YAML value, e.g. "
                    "{train: [0, 3, 1]} or [0, 3, 1] with every bracket closed"
                ) from None
            value = OmegaConf.select(parsed, key)
        OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    return cfg


def compose(config_name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `configs/<config_name>.yaml` with its defaults and the command-line overrides.

    Args:
        config_name: "train" or "eval".
        overrides: `group=name` and `dotted.key=value` strings.

    Returns:
        The composed config (not yet resolved).

    Raises:
        ConfigError: unknown group choice, unknown key, malformed argument.
    """
    root = _load_yaml(config_dir() / f"{config_name}.yaml")
    defaults = OmegaConf.to_container(root.pop("defaults", OmegaConf.create({})))
    if not isinstance(defaults, dict):
        raise ConfigError(f"{config_name}.yaml: 'defaults' must be a mapping group -> name")
    choices: Dict[str, Optional[str]] = dict(defaults)
    rest: List[str] = []
    for arg in overrides:
        key, value = _parse_override(arg)
        if key in GROUPS:
            choices[key] = None if value in ("null", "none", "") else value
        else:
            rest.append(f"{key}={value}")
    exp = _group_file("experiment", choices["experiment"]) if choices.get("experiment") else None
    if exp is not None and "defaults" in exp:
        # the preset's own group choices; explicit `group=name` arguments keep precedence
        picks = OmegaConf.to_container(exp.pop("defaults"))
        if not isinstance(picks, dict) or not set(picks) <= set(GROUPS) - {"experiment"}:
            raise ConfigError(f"experiment {choices['experiment']!r}: 'defaults' must map groups "
                              f"{[g for g in GROUPS if g != 'experiment']} to file names, got {picks!r}")
        given = {_parse_override(a)[0] for a in overrides if "=" in a}
        for group, name in picks.items():
            if group not in given:
                choices[group] = name
    cfg = root
    for group in GROUPS:
        name = choices.get(group)
        if group == "experiment" or name is None:
            continue
        cfg[group] = _group_file(group, name)
        cfg[group]["_name"] = name
    if exp is not None:
        for key in exp.keys():
            _check_key(cfg, str(key))
        cfg = OmegaConf.merge(cfg, exp)
    apply_overrides(cfg, rest)
    return cfg


def method_config(name: str, preset: Optional[str] = None, overrides: Mapping[str, Any] | None = None) -> DictConfig:
    """The method section alone: configs/method/<name>.yaml, a preset's method deltas, overrides.

    Args:
        name: method name.
        preset: e.g. "tiny": merges the `method:` part of configs/experiment/<name>_<preset>.yaml.
        overrides: dotted keys inside the method section.
    """
    cfg = _group_file("method", name)
    if preset:
        exp = _group_file("experiment", f"{name}_{preset}")
        if "method" in exp:
            cfg = OmegaConf.merge(cfg, exp.method)
    if overrides:
        apply_overrides(cfg, dict(overrides))
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    """Resolved YAML text of a config."""
    return OmegaConf.to_yaml(cfg, resolve=True)
