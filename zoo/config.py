"""Config composition with Hydra: the command line of train.py / eval.py, and `compose()` for code.

The config tree lives in `configs/` (next to this package in a source checkout; env ZOO_CONFIG_DIR
overrides). `train.yaml` and `eval.yaml` are Hydra primary configs whose defaults list picks one
file per group::

    defaults:
      - method: gaussian_avatar   # configs/method/gaussian_avatar.yaml -> cfg.method
      - data: synthetic           # configs/data/synthetic.yaml         -> cfg.data
      - trainer: cpu              # configs/trainer/cpu.yaml            -> cfg.trainer
      - logger: wandb             # configs/logger/wandb.yaml           -> cfg.logger
      - _self_
      - experiment: null          # configs/experiment/<name>.yaml: `# @package _global_` presets

A preset chooses groups with `defaults: [override /data: people_snapshot, ...]` and holds deltas;
a `group=name` on the command line wins over the preset's choice.

Every Hydra habit works (`--help`, `-m` sweeps, `--cfg job`, `+key=value`, `~key`,
`hydra.run.dir=DIR`); on top of Hydra this module keeps the zoo's error contract: a user error is
one line on stderr and exit code 2, and an unknown key lists the valid keys at its level. Each group
section carries its file name as `_name` (`cfg.method._name == "gaussian_avatar"`), and `run_dir`
is the job's output folder (`run_dir=DIR` is the same as `hydra.run.dir=DIR`).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

GROUPS = ("method", "data", "trainer", "logger", "experiment")
FREE_FORM = ("options", "tags", "extra")  # maps whose keys no file declares: `data.options.k=v` adds k


class ConfigError(ValueError):
    """A config file or command-line override that cannot be applied."""


def config_dir() -> Path:
    """The folder holding train.yaml and the group folders (env ZOO_CONFIG_DIR overrides)."""
    env = os.environ.get("ZOO_CONFIG_DIR")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent / "configs"


def available(group: str) -> List[str]:
    """Names of the files of a config group (without .yaml)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


# ---------------------------------------------------------------------------------------------
# overrides: parse, rewrite (run_dir, free-form maps), validate


def _malformed(text: str, reason: str) -> ConfigError:
    """The error for an override Hydra's grammar rejects: YAML's diagnosis of the value when it has one."""
    if "=" not in text:
        return ConfigError(f"malformed argument {text!r}: {reason}")
    key, value = text.split("=", 1)
    import yaml

    try:
        yaml.safe_load(value)
    except yaml.YAMLError as err:
        reason = str(getattr(err, "problem", None) or str(err).splitlines()[0])
    return ConfigError(f"malformed value for {key.lstrip('+~')}: {value!r} ({reason}); expected a value in "
                       "Hydra's override grammar, e.g. {train: [0, 3, 1]} or [0, 3, 1] with every bracket "
                       "closed, or quoted: key='a b'")


def _parse(overrides: Sequence[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        if "=" not in text and not text.startswith("~"):
            raise ConfigError(f"malformed argument {text!r}: expected key=value (e.g. method=gaussian_avatar), "
                              "+key=value to add a key, ~key to remove one, or a flag such as --help")
        try:
            parsed.append(parser.parse_override(text))
        except HydraException as err:  # OverrideParseException, or the grammar's own error
            lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
            raise _malformed(text, lines[1] if len(lines) > 1 else lines[0]) from None
    return parsed


def prepare(overrides: Sequence[str], multirun: bool = False) -> List[str]:
    """Command-line overrides in the form Hydra applies them.

    `run_dir=DIR` becomes `hydra.run.dir=DIR` (with -m: `hydra.sweep.dir=DIR`), so Hydra writes its
    `.hydra/` record into the run folder; a key under a free-form map (`data.options.k=v`) is
    force-added (`++`), as the parsers take options no config file declares.

    Raises:
        ConfigError: a malformed argument, or a sweep (`seed=0,1`) without -m.
    """
    out = []
    for text, ov in zip(overrides, _parse(overrides)):
        key = ov.key_or_group
        if ov.is_sweep_override() and not multirun:
            value = text.split("=", 1)[1]
            raise ConfigError(f"{text!r} is a sweep: add -m (--multirun) to run one job per value, or write "
                              f"{key}=[{value}] for a list, {key}='{value}' for a string")
        if key == "run_dir" and ov.type.name == "CHANGE" and ov.package is None:
            out.append(f"hydra.{'sweep' if multirun else 'run'}.dir={text.split('=', 1)[1]}")
            continue
        if key in GROUPS and ov.type.name == "CHANGE" and ov.value() is None:
            out.append(f"~{key}")  # `logger=null`: Hydra's spelling is ~logger (no file from the group)
            continue
        if ov.type.name == "CHANGE" and any(p in FREE_FORM for p in key.split(".")[:-1]):
            out.append("++" + text)
            continue
        out.append(text)
    return out


def resume_run_dir(overrides: Sequence[str]) -> List[str]:
    """Overrides with the run folder of a resumed run: `ckpt_path=<run>/checkpoints/<name>.ckpt`
    without a run_dir resumes into `<run>` (`hydra.run.dir=<run>`: no new folder, nothing of the
    old one removed). A checkpoint elsewhere, or an explicit run_dir, is left as it is."""
    keys = {text.split("=", 1)[0].lstrip("+~") for text in overrides if "=" in text}
    if "hydra.run.dir" in keys:
        return list(overrides)
    for text in overrides:
        key, _, value = text.partition("=")
        if key.lstrip("+") != "ckpt_path" or value in ("", "null", "None"):
            continue
        ckpt = Path(value.strip("'\"")).expanduser()
        if ckpt.parent.name == "checkpoints" and ckpt.parent.parent.is_dir():
            return list(overrides) + [f"hydra.run.dir={ckpt.parent.parent}"]
    return list(overrides)


def _jobs_to_check(overrides: Sequence[str]) -> List[List[str]]:
    """Override lists that together compose every value of every sweep once (not the whole product)."""
    base, sweeps = [], []
    for text, ov in zip(overrides, _parse(overrides)):
        if ov.is_sweep_override():
            key = text.split("=", 1)[0]
            values = [f"{key}={v}" for v in ov.sweep_string_iterator()]
            sweeps.append((len(base), values))
            base.append(values[0])
        else:
            base.append(text)
    jobs = [base]
    for index, values in sweeps:
        for value in values[1:]:
            job = list(base)
            job[index] = value
            jobs.append(job)
    return jobs


# ---------------------------------------------------------------------------------------------
# composition


def _valid_keys_message(cfg: DictConfig, dotted: str, hint: str = "") -> str:
    node: Any = cfg
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        parent = ".".join(parts[:i]) or "<root>"
        if isinstance(node, DictConfig):
            if part not in node:
                valid = ", ".join(sorted(str(k) for k in node.keys() if str(k) != "hydra"))
                return f"unknown config key {dotted!r}: {parent} has no {part!r}; valid keys: {valid}{hint}"
            node = node._get_node(part)
            if i == len(parts) - 1 and hint.startswith(" (~") and node._is_none():
                return f"~{dotted}: the value is null, which Hydra treats as absent; set it instead ({dotted}=VALUE)"
            node = node if isinstance(node, (DictConfig, ListConfig)) else None
            if isinstance(node, DictConfig) and node._is_none():
                node = None
        elif isinstance(node, ListConfig):
            return f"unknown config key {dotted!r}: {parent} is a list of {len(node)}, not a section{hint}"
        else:
            return f"unknown config key {dotted!r}: {parent} is a value, not a section{hint}"
    return f"cannot apply {dotted!r}{hint}"


def _hydra_compose(config_name: str, overrides: List[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    saved = gh.hydra if gh.is_initialized() else None  # compose() called inside a running app
    if saved is not None:
        gh.clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name=config_name):
            return hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    finally:
        if saved is not None:
            GlobalHydra.instance().initialize(saved)


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _explain(err: Exception, config_name: str, overrides: List[str]) -> str:
    """One line for a composition error (an unknown key -> the valid keys at that level)."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    for pattern, hint in ((r"Could not override '([^']+)'", " (+KEY=VALUE adds a new key)"),
                          (r"Could not delete from config\. '([^']+)' does not exist", " (~KEY removes an existing key)"),
                          (r"Could not delete from config\. The value of '([^']+)' is", "")):
        found = re.search(pattern, text)
        if found is None:
            continue
        bad = found.group(1)
        if hint == "":  # ~key=VALUE names a value that differs
            return f"~{bad}: {first.split('. ', 1)[1] if '. ' in first else first}"
        try:
            base = _hydra_compose(config_name, [o for o in overrides if _key_of(o) != bad])
        except Exception:  # other arguments fail as well: report Hydra's first line
            return first
        return _valid_keys_message(base, bad, hint)
    found = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if found:
        group, name = found.group(1), found.group(2)
        choices = available(group) if (config_dir() / group).is_dir() else []
        listing = f"choose one of: {', '.join(choices)}" if choices else "see --hydra-help for the installed ones"
        return f"unknown {group} {name!r}; {listing}"
    found = re.search(r"Could not append to config\. An item is already at '([^']+)'", text)
    if found:
        return f"+{found.group(1)}: the key exists already; set it with {found.group(1)}=VALUE (or ++ to add or set)"
    cause = getattr(err, "__cause__", None)
    if cause is not None and str(cause).strip():
        return f"{first} ({str(cause).strip().splitlines()[0]})"
    return first


def _compose_checked(config_name: str, overrides: List[str]) -> DictConfig:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = _hydra_compose(config_name, overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise ConfigError(_explain(err, config_name, overrides)) from None
    _check_value_types(cfg, config_name, overrides)
    return cfg


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number"}


def _check_value_types(cfg: DictConfig, config_name: str, overrides: List[str]) -> None:
    """`key=text` where the config's own value for that key is a number or a boolean is refused here,
    naming the key (not later by int() deep inside a run, after the data was prepared)."""
    for override in overrides:
        if "=" not in override or override.startswith(("+", "~")) or override.split("=", 1)[0] in GROUPS:
            continue
        key = _key_of(override)
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if not isinstance(value, str):
            continue
        try:
            base = _hydra_compose(config_name, [o for o in overrides if _key_of(o) != key])
        except Exception:  # noqa: BLE001 - the other overrides alone fail: composition reports that
            continue
        default = OmegaConf.select(base, key, default=None, throw_on_missing=False)
        want = next((name for kind, name in _TYPE_NAMES.items() if type(default) is kind), None)
        if want is not None:
            raise ConfigError(f"{key}={value}: expected {want} (its default is {default!r})")


def _finish(cfg: DictConfig, hydra_cfg: DictConfig | None = None) -> DictConfig:
    """Each group section named (`_name`), run_dir concrete, the hydra node dropped, struct off."""
    hydra_cfg = hydra_cfg if hydra_cfg is not None else cfg.get("hydra")
    choices = hydra_cfg.runtime.choices if hydra_cfg is not None else {}
    OmegaConf.set_struct(cfg, False)
    for group in GROUPS:
        section = cfg.get(group) if group != "experiment" else None
        if not isinstance(section, DictConfig):
            continue
        if choices.get(group):
            section["_name"] = str(choices[group])
        elif set(section.keys()) <= {"_name"}:  # `group=null`: no section, only train.yaml's _name stub
            cfg.pop(group)
    if "run_dir" in cfg and OmegaConf.is_interpolation(cfg, "run_dir"):
        if "hydra" in cfg:  # compose(): no job runs; the run folder is hydra.run.dir
            cfg.run_dir = str(OmegaConf.select(cfg, "hydra.run.dir"))
        else:
            cfg.run_dir = str(cfg.run_dir)
    cfg.pop("hydra", None)
    return cfg


def compose(config_name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
    """Compose `configs/<config_name>.yaml` with Hydra and command-line style overrides.

    Args:
        config_name: "train" or "eval".
        overrides: Hydra overrides: `group=name`, `dotted.key=value`, `+key=value`, `~key`,
            `run_dir=DIR` (no sweeps: those need the command line's -m).

    Returns:
        The composed config (not yet resolved; struct mode off), `cfg.<group>._name` set.

    Raises:
        ConfigError: unknown group choice, unknown key, malformed argument, a sweep.
    """
    return _finish(_compose_checked(config_name, prepare(list(overrides))))


def method_config(name: str, preset: Optional[str] = None, overrides: Mapping[str, Any] | None = None) -> DictConfig:
    """The method section alone: configs/method/<name>.yaml, a preset's method deltas, overrides.

    Args:
        name: method name.
        preset: e.g. "tiny": the method part of configs/experiment/<name>_<preset>.yaml.
        overrides: dotted keys inside the method section (unknown keys raise ConfigError).
    """
    if name not in available("method"):
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(available('method'))}")
    args = [f"method={name}"]
    if preset:
        if f"{name}_{preset}" not in available("experiment"):
            known = [e[len(name) + 1:] for e in available("experiment") if e.startswith(name + "_")]
            raise ConfigError(f"unknown preset {preset!r} for {name}; choose one of: {', '.join(known)}")
        args.append(f"experiment={name}_{preset}")
    cfg = compose("train", args).method
    cfg.pop("_name", None)
    if overrides:
        apply_overrides(cfg, dict(overrides))
    return cfg


def _check_key(cfg: DictConfig, dotted: str) -> None:
    """Raise ConfigError unless `dotted` names an existing key (free-form maps may be extended)."""
    node: Any = cfg
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, DictConfig) and part not in node and i > 0 and parts[i - 1] in FREE_FORM:
            return
        if not isinstance(node, DictConfig) or part not in node:
            raise ConfigError(_valid_keys_message(cfg, dotted))
        node = node[part] if not OmegaConf.is_missing(node, part) else None


def apply_overrides(cfg: DictConfig, overrides: Mapping[str, Any]) -> DictConfig:
    """Set dotted keys on `cfg` from a mapping (strict: unknown keys raise ConfigError)."""
    for key, value in overrides.items():
        _check_key(cfg, key)
        OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    """Resolved YAML text of a config."""
    return OmegaConf.to_yaml(cfg, resolve=True)


# ---------------------------------------------------------------------------------------------
# the Hydra application behind train.py / eval.py


def run_app(config_name: str, argv: Sequence[str], task: Callable[[DictConfig], int]) -> int:
    """Run `task` as the Hydra app over configs/<config_name>.yaml with the command line `argv`.

    Hydra parses the flags (--help, -m, --cfg, ...), composes, and launches (one job, or one per
    sweep point, each with its own run folder). Before Hydra sees them the overrides are checked
    here, so a user error is one line on stderr and exit code 2 instead of Hydra's report. Callable
    many times in one process (Hydra's global state is cleared after each call).

    Returns:
        The exit code: the largest code a job returned (0 when all succeeded), 2 for a user error.
    """
    from hydra import version
    from hydra._internal.utils import _run_hydra, get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    parser = get_args_parser()
    parser.prog = f"{config_name}.py"
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as stop:  # argparse has printed its usage line
        return int(stop.code or 0)
    existed: set = set()  # run folders there before this call: never removed
    try:
        modes = [flag for flag, on in (("--run", args.run), ("-m", args.multirun), ("--cfg", args.cfg),
                                       ("--info", args.info), ("--shell-completion", args.shell_completion)) if on]
        if len(modes) > 1:
            raise ConfigError(f"{' and '.join(modes)} do not go together: pick one of --run, -m, --cfg, --info")
        if args.resolve and not (args.cfg or args.help):
            raise ConfigError("--resolve goes with --cfg (e.g. --cfg job --resolve) or --help")
        args.overrides = prepare(args.overrides, multirun=bool(args.multirun))
        if config_name == "train" and not args.multirun:
            args.overrides = resume_run_dir(args.overrides)
        if not (args.help or args.hydra_help or args.shell_completion):
            for job_overrides in _jobs_to_check(args.overrides):
                checked = _compose_checked(config_name, job_overrides)
                folder = OmegaConf.select(checked, "hydra.run.dir", default=None)
                if folder and Path(str(folder)).exists():
                    existed.add(Path(str(folder)).resolve())
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    codes: List[int] = []

    def job(cfg: DictConfig) -> int:
        hydra_cfg = HydraConfig.get()
        out = Path(hydra_cfg.runtime.output_dir)
        if args.multirun:
            print(f"[sweep job {hydra_cfg.job.num}] {' '.join(hydra_cfg.overrides.task)} -> {out}", flush=True)
        cfg = _finish(cfg, hydra_cfg)
        code = int(task(cfg) or 0)
        codes.append(code)
        if code != 0 and hydra_cfg.output_subdir and out.is_dir() and out.resolve() not in existed and \
                {p.name for p in out.iterdir()} <= {str(hydra_cfg.output_subdir)}:
            shutil.rmtree(out)  # a run that failed before writing anything leaves no folder behind
        return code

    job.__module__ = config_name  # Hydra names the job (hydra.job.name) after the script
    version.setbase("1.3")
    GlobalHydra.instance().clear()
    try:
        _run_hydra(args=args, args_parser=parser, task_function=job, config_path=str(config_dir()),
                   config_name=config_name)
    except SystemExit as stop:  # --help, --info: 0; an error Hydra reported: its code
        if stop.code not in (0, None):
            return int(stop.code) if isinstance(stop.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
    return max(codes, default=0)
