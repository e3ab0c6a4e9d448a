"""What train.py and eval.py share: data module, logger, trainer, checkpoint loading, reporting.

Errors a user can cause (a bad override, a missing data root or body model) are raised as
`ConfigError` (a ValueError), FileNotFoundError or the data layer's DatasetError (a ValueError); the
entry points print them as one line and exit 2.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from zoo.config import ConfigError


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_data_root(data_cfg: Mapping[str, Any]) -> Path:
    """The subject folder the parser reads; writes the synthetic subject first when configured.

    Raises:
        FileNotFoundError: the root does not exist and the data config has no `synthesize` section.
    """
    missing = isinstance(data_cfg, DictConfig) and OmegaConf.is_missing(data_cfg, "root")
    root = None if missing else data_cfg.get("root")
    if root in (None, "", "???"):
        raise ConfigError(f"data.root is not set: pass data.root=/path/to/{data_cfg.get('format', 'dataset')}/subject")
    root = Path(str(root)).expanduser()
    synth = data_cfg.get("synthesize")
    if synth:
        from zoo.synthetic.subject import ensure_synthetic

        options = OmegaConf.to_container(synth, resolve=True) if isinstance(synth, DictConfig) else dict(synth)
        return ensure_synthetic(root, progress=True, **options)
    if not root.exists():
        raise FileNotFoundError(f"data root not found: {root} (data.root; format {data_cfg.get('format')})")
    return root


def resolve_body_models(body_models: Optional[str], data_cfg: Mapping[str, Any]) -> Optional[str]:
    """The body-model folder: the given one, else the data folder's `body_models` pointer (written by
    `python -m zoo data synth`; zoo.data.body_files.find_pointer), else $ZOO_BODY_MODELS, else
    (synthetic data only) the procedural bodies the synthetic subject is built from. None: parsers
    and methods raise a clear error naming ZOO_BODY_MODELS when they need a model file."""
    if body_models:
        return str(body_models)
    from zoo.data.body_files import find_pointer

    missing = isinstance(data_cfg, DictConfig) and OmegaConf.is_missing(data_cfg, "root")
    for root in ([] if missing else [data_cfg.get("root")]) + list(data_cfg.get("roots") or [])[:1]:
        pointed = find_pointer(str(root) if root else None)
        if pointed is not None:
            return str(pointed)
    if os.environ.get("ZOO_BODY_MODELS"):
        return os.environ["ZOO_BODY_MODELS"]
    if data_cfg.get("synthesize"):
        from zoo.synthetic.subject import body_models_dir

        return str(body_models_dir(None))
    return None


def build_datamodule(data_cfg: Mapping[str, Any], body_models: Optional[str] = None, seed: int = 0):
    """AvatarDataModule for a data config section (format, root, options, loader settings); a section
    with `multi_subject` gets the multi-subject datamodule of feed-forward methods (zoo.data.multi_subject).
    `seed` (the run's seed) fixes the training order of every epoch (a resumed run sees the same batches)."""
    from zoo.data.datamodule import AvatarDataModule

    if data_cfg.get("multi_subject"):
        from zoo.data.multi_subject import build_multi_subject

        return build_multi_subject(data_cfg, body_models, seed=seed)
    root = resolve_data_root(data_cfg)
    options = dict(data_cfg.get("options") or {})
    if body_models and "body_models" not in options and data_cfg.get("format") in ("zju_mocap", "neuman"):
        options["body_models"] = body_models
    poses = data_cfg.get("poses")
    if poses:
        # drive any method with a pose file (e.g. HumanSplatHMR's refined_poses.npz): every frame the
        # file holds takes its body parameters; the training frames must all be there
        from zoo.data.parsers import PARSERS
        from zoo.data.pose_files import PoseOverrideSequence

        fmt = str(data_cfg["format"])
        if fmt not in PARSERS:
            raise ConfigError(f"unknown data.format {fmt!r}; known: {sorted(PARSERS)}")
        base = PARSERS[fmt](root, **options)
        train_ids = {int(base.records[i].frame_id) for i in base.splits["train"]}
        sequence = PoseOverrideSequence(base, str(poses), require=sorted(train_ids))
        return AvatarDataModule(parser=sequence, batch_size=int(data_cfg.get("batch_size", 1)),
                                num_workers=int(data_cfg.get("num_workers", 0)), cache=data_cfg.get("cache", "auto"),
                                seed=int(seed))
    dm = AvatarDataModule(
        parser=str(data_cfg["format"]),
        root=str(root),
        parser_options=options,
        batch_size=int(data_cfg.get("batch_size", 1)),
        num_workers=int(data_cfg.get("num_workers", 0)),
        cache=data_cfg.get("cache", "auto"),
        seed=int(seed),
    )
    return dm


def data_info(dm, data_cfg: Mapping[str, Any], body_models: Optional[str]) -> Dict[str, Any]:
    """What a method needs to know about its training sequence (stored in every checkpoint)."""
    if hasattr(dm, "data_info"):  # multi-subject datamodule: its own summary
        return dm.data_info(data_cfg, body_models or os.environ.get("ZOO_BODY_MODELS"))
    seq = dm.sequence
    train = list(seq.splits["train"])
    if not train:
        raise ConfigError(f"the train split of {seq.subject!r} is empty")
    records = [seq.records[i] for i in train]  # parsed metadata: no image is decoded here
    frame_ids = sorted({int(r.frame_id) for r in records})
    betas = np.mean([np.asarray(r.body["betas"], dtype=np.float64).reshape(-1) for r in records], axis=0)
    height, width = seq.output_size(train[0]) or tuple(seq[train[0]]["image"].shape[-2:])
    data = OmegaConf.to_container(data_cfg, resolve=True) if isinstance(data_cfg, DictConfig) else dict(data_cfg)
    return {
        "subject": str(seq.subject),
        "model_type": str(seq.model_type),
        "gender": str(getattr(seq, "gender", "neutral")),
        "betas": [float(b) for b in betas],
        "frame_ids": frame_ids,
        "height": int(height),
        "width": int(width),
        "protocol": {**dict(seq.protocol), **dict(data.get("protocol") or {})},
        "test_splits": list(dm.test_split_names),
        "body_models": body_models or os.environ.get("ZOO_BODY_MODELS"),
        "data": data,
    }


def _wandb_subject(cfg: DictConfig) -> str:
    """The subject a run trains on, for the W&B group, read without writing anything: the data
    root's folder name; for a synthetic section the first subject its manifest lists (train.py has
    written it by then); multi-subject data: "multi"."""
    data = cfg.get("data") or {}
    if data.get("multi_subject"):
        return "multi"
    missing = isinstance(data, DictConfig) and OmegaConf.is_missing(data, "root")
    root = None if missing else data.get("root")
    if root in (None, "", "???"):
        return "unknown"
    root = Path(str(root)).expanduser()
    if data.get("synthesize"):
        manifest = root / "synthetic.json"
        try:
            paths = json.loads(manifest.read_text()).get("paths") or []
        except (OSError, ValueError, AttributeError):
            paths = []
        return Path(str(paths[0])).name if paths else f"seed{(data.get('synthesize') or {}).get('seed', 0)}"
    return root.name


def build_logger(cfg: DictConfig, run_dir: Path):
    """The logger of cfg.logger (``kind: wandb | csv``); None when no logger.

    W&B: wandb picks its mode. ``WANDB_MODE=offline`` (or dryrun) gives an offline run that
    ``wandb sync`` uploads later, ``WANDB_MODE=disabled`` a no-op run; otherwise the run is online
    with the credentials of ``wandb login`` / ``WANDB_API_KEY``. Only when wandb has no credentials
    at all (it refuses with a UsageError) the run goes offline, and says so on stderr. Runs are
    grouped by dataset and subject (``<data>_<subject>``), named and tagged by method, and log the
    resolved config.
    """
    lcfg = cfg.get("logger")
    if not lcfg:
        return None
    kind = lcfg.get("kind", "csv")
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="", version="")
    if kind == "wandb":
        import sys

        import wandb
        from lightning.pytorch.loggers import WandbLogger

        method = str((cfg.get("method") or {}).get("name") or "method")
        data_name = str((cfg.get("data") or {}).get("_name") or (cfg.get("data") or {}).get("format") or "data")
        subject = _wandb_subject(cfg)
        tags = list(dict.fromkeys([method, data_name, subject, *[str(t) for t in (lcfg.get("tags") or [])]]))
        env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
        kwargs = dict(project=lcfg.get("project", "avatar-zoo"), group=lcfg.get("group") or f"{data_name}_{subject}",
                      name=lcfg.get("name") or method, tags=tags, save_dir=str(run_dir), job_type="train",
                      config=OmegaConf.to_container(cfg, resolve=True))
        if wandb.run is not None:  # a previous job of this process (a -m sweep): close it, never log into it
            wandb.finish()
        if env_mode in ("offline", "dryrun", "disabled"):
            return WandbLogger(mode="disabled" if env_mode == "disabled" else "offline", **kwargs)
        logger = WandbLogger(**kwargs)
        try:
            _ = logger.experiment  # wandb.init now: a missing login shows here, not mid-training
        except wandb.errors.UsageError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"note: W&B has no credentials ({first}); this run logs offline under {run_dir / 'wandb'} "
                  "(upload it later with `wandb sync`, or run `wandb login` for online runs)", file=sys.stderr)
            logger = WandbLogger(mode="offline", **kwargs)
        return logger
    raise ConfigError(f"logger.kind must be wandb or csv, got {kind!r}")


def headline_summary_callback():
    """A Lightning callback (`build_trainer` adds it for a W&B logger): the run's summary holds the
    protocol's headline metrics (``EvalProtocol.primary_keys``), not the last logged step.

    At fit start it declares ``val/<key>`` with ``summary="max"`` (PSNR, SSIM) or ``"min"`` (LPIPS)
    through ``wandb.define_metric``; at test end it writes each test split's headline values (the
    scored checkpoint's: train.py tests the best one) into ``run.summary`` as ``<split>/<key>``,
    with ``protocol`` (its name) and ``headline_keys``.
    """
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import WandbLogger

    def wandb_run(trainer):
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                run = logger.experiment
                return run if hasattr(run, "summary") and hasattr(run, "define_metric") else None
        return None

    def headline(pl_module) -> List[str]:
        protocol = getattr(pl_module, "protocol", None)
        return list(protocol.primary_keys) if protocol is not None else ["psnr", "ssim", "lpips"]

    class HeadlineSummary(Callback):
        def on_fit_start(self, trainer, pl_module) -> None:
            run = wandb_run(trainer)
            for key in headline(pl_module) if run is not None else ():
                run.define_metric(f"val/{key}", summary="min" if key.startswith("lpips") else "max")

        def on_test_end(self, trainer, pl_module) -> None:
            run = wandb_run(trainer)
            results = getattr(pl_module, "test_results", None) or {}
            if run is None or not results:
                return
            keys = headline(pl_module)
            for split, values in results.items():
                for key in keys:
                    if key in values:
                        run.summary[f"{split}/{key}"] = float(values[key])
            run.summary["protocol"] = str(getattr(getattr(pl_module, "protocol", None), "name", "") or "")
            run.summary["headline_keys"] = ",".join(keys)

    return HeadlineSummary()


def step_seed_callback(seed: int):
    """A Lightning callback that seeds python, numpy and torch at the start of every training batch
    from ``(seed, global step, rank)``: what a step draws (random backgrounds, densification
    choices, dropout) depends on nothing but the step, so a run resumed from a checkpoint takes the
    very steps an uninterrupted run takes (bitwise on CPU), and DDP ranks draw differently."""
    import random

    from lightning.pytorch.callbacks import Callback

    class StepSeed(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            mixed = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(trainer.global_step), int(trainer.global_rank)])
            value = int(mixed.generate_state(1, dtype=np.uint64)[0] >> 1)
            random.seed(value)
            np.random.seed(value % 2**32)
            torch.manual_seed(value)

    return StepSeed()


def _strategy(kwargs: Dict[str, Any]) -> None:
    """Turn ``strategy: ddp`` plus a ``ddp:`` section (DDPStrategy arguments, e.g.
    ``broadcast_buffers``, ``find_unused_parameters``, ``process_group_backend``) into a
    DDPStrategy; without the section the strategy stays Lightning's string."""
    options = kwargs.pop("ddp", None)
    if not options:
        return
    strategy = str(kwargs.get("strategy", "ddp"))
    if strategy not in ("ddp", "ddp_spawn", "ddp_fork"):
        raise ConfigError(f"trainer.ddp options need trainer.strategy ddp, ddp_spawn or ddp_fork, got {strategy!r}")
    from lightning.pytorch.strategies import DDPStrategy

    options = dict(options)
    if strategy != "ddp":
        options.setdefault("start_method", strategy.split("_", 1)[1])
    try:
        kwargs["strategy"] = DDPStrategy(**options)
    except TypeError as err:
        raise ConfigError(f"trainer.ddp: {err}") from None


def build_trainer(tcfg: Mapping[str, Any], run_dir: Path, logger, callbacks: Sequence[Any] = ()):
    """A Lightning Trainer from a trainer config section.

    With a logger it also gets a `LearningRateMonitor` (every param group's lr per step) and, for a
    W&B logger, `headline_summary_callback()`.
    """
    import lightning as L

    kwargs = dict(OmegaConf.to_container(tcfg, resolve=True)) if isinstance(tcfg, DictConfig) else dict(tcfg)
    kwargs.pop("_name", None)
    _strategy(kwargs)
    callbacks = list(callbacks)
    if logger is not None:
        from lightning.pytorch.callbacks import LearningRateMonitor
        from lightning.pytorch.loggers import WandbLogger

        callbacks.append(LearningRateMonitor(logging_interval="step"))
        if isinstance(logger, WandbLogger):
            callbacks.append(headline_summary_callback())
    return L.Trainer(default_root_dir=str(run_dir), logger=logger if logger is not None else False,
                     callbacks=callbacks, **kwargs)


def read_checkpoint(ckpt_path: str | Path) -> Dict[str, Any]:
    """A checkpoint's contents through ``torch.load(weights_only=True)``, refused with one clear error.

    Used by load_module (eval, animate, zoo.load) and by train.py before resuming (``ckpt_path=``):
    a crafted pickle must not run code, a truncated file or something that is not an Avatar Zoo
    checkpoint is named with what was expected.

    Raises:
        FileNotFoundError: no such file. ValueError: unsafe, unreadable or not an Avatar Zoo checkpoint.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    import pickle

    try:
        # tensors and plain containers only: a crafted pickle in a checkpoint must not run code
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: refusing to load a checkpoint that holds objects other than tensors and plain "
                         f"containers (torch.load weights_only=True: {first})") from None
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from None
    except Exception as err:  # noqa: BLE001 - any other decoder failure is a bad file, not a bug here
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{path}: not an Avatar Zoo checkpoint (expected a dict with state_dict and "
                         f"hyper_parameters, got {type(ckpt).__name__})")
    hp = ckpt.get("hyper_parameters") or {}
    if not isinstance(hp, Mapping) or not isinstance(hp.get("cfg"), Mapping) or "name" not in hp["cfg"]:
        raise ValueError(f"{path}: not an Avatar Zoo checkpoint (no method config in hyper_parameters)")
    if not isinstance(ckpt.get("state_dict"), Mapping):
        raise ValueError(f"{path}: not an Avatar Zoo checkpoint (no state_dict)")
    return dict(ckpt)


def check_resume(ckpt_path: str | Path, method_cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """Refuse, before any output, a checkpoint train.py cannot resume from (`read_checkpoint`'s checks,
    and a method other than the configured one). Returns the checkpoint's contents."""
    ckpt = read_checkpoint(ckpt_path)
    saved = ckpt["hyper_parameters"]["cfg"].get("name")
    wanted = method_cfg.get("name")
    if saved != wanted:
        raise ValueError(f"{ckpt_path}: checkpoint of method {saved!r}, but method={wanted!r} is configured "
                         f"(resume with the method the checkpoint was trained with)")
    return ckpt


def load_module(ckpt_path: str | Path, body_models: Optional[str] = None):
    """Rebuild a method from a checkpoint (its stored config and data_info) and load its weights.

    The module is pinned to the step it was saved at (`pin_step`): schedules and stages read the
    Trainer's global step, which is 0 outside training, so a loaded model renders as it was saved.

    Raises:
        FileNotFoundError: no such file. ValueError: see `read_checkpoint`; the stored method config
            does not fit this code (unknown method, missing or mismatched weights).
    """
    from zoo.registry import get_method

    path = Path(ckpt_path)
    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    info = dict(hp.get("data_info") or {})
    if body_models:
        info["body_models"] = body_models
    try:
        cls = get_method(hp["cfg"]["name"])
    except KeyError as err:
        raise ValueError(f"{path}: hyper_parameters.cfg.name: {err.args[0] if err.args else err}") from None
    module = cls(hp["cfg"], data_info=info)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{path}: weights do not fit the stored method config {hp['cfg']['name']!r} "
                         f"({first})") from None
    if ckpt.get("global_step") is not None and hasattr(module, "pin_step"):
        module.pin_step(int(ckpt["global_step"]))
    module.eval()
    return module


def baseline_scores(dm, splits: Sequence[str], body_models: Optional[str] = None,
                    protocol: Optional[Mapping[str, Any]] = None) -> Dict[str, Dict[str, float]]:
    """The copy-the-nearest-training-frame baseline (`zoo.baseline`) on the same splits and protocol.

    Args:
        dm: the datamodule the method was scored on.
        splits: split names.
        body_models: body-model folder (aligns the copy to the body's projected centre); None: plain copy.
        protocol: the protocol dict the method was scored with (default the sequence's).
    """
    from zoo.baseline import nearest_frame_scores
    from zoo.core.metrics import EvalProtocol

    body_models = body_models or os.environ.get("ZOO_BODY_MODELS")
    if hasattr(dm, "baseline_scores"):  # multi-subject datamodule: the mean-colour template baseline
        return dm.baseline_scores(splits, protocol, body_models)
    chosen = EvalProtocol(**dict(protocol)) if protocol else None
    return nearest_frame_scores(dm, splits=splits, protocol=chosen, body_models=body_models)


NEAREST_FRAME = ("nearest", "copy of the nearest training frame, moved to the body's projected centre (zoo.baseline)")
MEAN_TEMPLATE = ("template", "the target's exact posed body mesh filled with the context views' mean person colour "
                             "(zoo.data.multi_subject)")


def baseline_kind(dm) -> Tuple[str, str]:
    """(short label, description) of the naive baseline `baseline_scores` computes for `dm`."""
    return MEAN_TEMPLATE if hasattr(dm, "baseline_scores") else NEAREST_FRAME


def format_table(results: Mapping[str, Mapping[str, float]],
                 baseline: Optional[Mapping[str, Mapping[str, float]]] = None, label: str = "nearest") -> str:
    """Metrics as a fixed-width table: one row per split, one column per metric; with `baseline`,
    each split is followed by the baseline's row on the same frames, named `<split>:<label>`."""
    if not results:
        return "(no test results)"
    if baseline:
        merged: Dict[str, Mapping[str, float]] = {}
        for split, values in results.items():
            merged[split] = values
            if split in baseline:
                merged[f"{split}:{label}"] = {k: v for k, v in baseline[split].items() if k != "frames"}
        results = merged
    cols: List[str] = []
    for values in results.values():
        for key in values:
            if key not in cols:
                cols.append(key)
    width = max(12, *(len(c) + 2 for c in cols))
    label = max(12, *(len(s) + 2 for s in results))
    head = f"{'split':<{label}}" + "".join(f"{c:>{width}}" for c in cols)
    lines = [head, "-" * len(head)]
    for split, values in results.items():
        cells = "".join(f"{values[c]:>{width}.4f}" if c in values else f"{'-':>{width}}" for c in cols)
        lines.append(f"{split:<{label}}" + cells)
    return "\n".join(lines)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON through a temporary file and a rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)
