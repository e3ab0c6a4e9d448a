"""The pose-noise robustness sweep: ``python eval.py sweep=pose_noise methods=[a,b] data=... [pose_noise.*]``.

Question answered: how good an avatar does each method build when its poses are HMR-quality
rather than exact? Every method is scored on the same subject at increasing noise levels of
:mod:`zoo.core.pose_noise` (HumanSplatHMR's noise model; level 1 = "hmr", MPJPE ~79 mm on the
default synthetic subject), with the same noise draw (``pose_noise.seed``) for every method.

Two modes (``pose_noise.mode``):

* ``train`` (default; the honest answer, one training run per method and level): the training
  split's poses are replaced by a noisy copy (``data.poses=<level>/poses.npz``, the route that drives
  any method with given poses, ``zoo.data.pose_files.noisy_pose_file``), the method trains on them
  as it would on HMR estimates (HumanSplatHMR starts from them, ``init_poses.source=dataset``, and
  refines them; per-frame corrections of the other methods may too), and the last checkpoint is
  scored on the protocol's test splits. ``test_view`` shows training frames from novel cameras at
  the poses the avatar was built with (noisy, possibly refined: a real capture has no better ones);
  ``test_pose`` drives the avatar with the held-out motion's exact poses.
* ``target`` (cheap, one training run per method, or the checkpoints of ``pose_noise.ckpts``): a
  clean-trained checkpoint is scored with every frame's poses noised. This measures how much a
  driving-pose error costs in image space, not how well a method copes with noisy training poses.

Level 0 is the plain data (no pose file), so its row equals ``eval.py ckpt_path=<level 0 ckpt>``.
Outputs under ``out_dir`` (default ``runs/sweep_pose_noise_<time>``): ``level_<L>/poses.npz``,
``level_<L>/<method>/`` (train runs), ``sweep.md`` and ``sweep.csv`` (one row per method, level and
split: the protocol's headline metrics and the PSNR change from level 0), ``sweep.png`` (headline
PSNR against the level, one line per method and split) and ``sweep.json``; with a W&B logger or an
active ``WANDB_MODE`` the table and the plot are logged too (``zoo.compare.log_table``).
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from zoo.config import ConfigError

__all__ = ["MODES", "noisy_poses", "train_once", "score", "sweep_rows", "line_chart", "run_sweep", "run"]

MODES = ("train", "target")
#: Methods whose avatar is built from context images without poses: not a single-subject sweep.
POSE_FREE = ("nopo_avatar",)


def _level_name(level: float) -> str:
    return f"{float(level):g}".replace(".", "p")


def noisy_poses(data_cfg: Mapping[str, Any], level: float, seed: int, split: Optional[str], out: Path,
                body_models: Optional[str] = None) -> Path:
    """Write the subject's poses perturbed at ``level`` (``split``'s frames, or every frame for None)
    as a pose file ``out``; the draw depends only on the seed, the frame ids and the joint count."""
    from zoo import runner
    from zoo.core.pose_noise import PoseNoiseConfig, perturb_poses
    from zoo.data.parsers import PARSERS
    from zoo.data.pose_files import save_pose_file, sequence_poses

    root = runner.resolve_data_root(data_cfg)
    fmt = str(data_cfg["format"])
    if fmt not in PARSERS:
        raise ConfigError(f"unknown data.format {fmt!r}; known: {sorted(PARSERS)}")
    options = dict(data_cfg.get("options") or {})
    models = runner.resolve_body_models(body_models, data_cfg)
    if models and "body_models" not in options and fmt in ("zju_mocap", "neuman"):  # as build_datamodule
        options["body_models"] = models
    sequence = PARSERS[fmt](root, **options)
    noise = PoseNoiseConfig(level=float(level), seed=int(seed))
    clean = sequence_poses(sequence, split)
    noisy = perturb_poses(clean.params, noise, times=clean.frame_ids)
    meta = dict(clean.meta, source="noise", level=float(level), seed=int(seed), split=split)
    return save_pose_file(out, clean.frame_ids, noisy, clean.model_type, meta)


def _plain(section: Any) -> Dict[str, Any]:
    return OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else dict(section or {})


def train_once(method: str, data_cfg: Mapping[str, Any], run_dir: Path, preset: Optional[str],
               overrides: Sequence[str], body_models: Optional[str], seed: int = 0) -> Path:
    """Train ``method`` (its ``<method>_<preset>`` experiment, else its defaults) on ``data_cfg`` and
    return the last checkpoint (the same number of steps at every level: no model selection)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from zoo import runner
    from zoo.config import compose
    from zoo.registry import get_method

    args = [f"experiment={method}_{preset}"] if preset else [f"method={method}"]
    cfg = compose("train", args + ["~logger", *overrides])
    cfg.data = OmegaConf.create(copy.deepcopy(dict(data_cfg)))
    if "init_poses" in cfg.method:  # HumanSplatHMR: start from the data's (noisy) poses, not noise of its own
        cfg.method.init_poses.source = "dataset"
    runner.seed_everything(int(seed))
    models = runner.resolve_body_models(body_models, cfg.data)
    dm = runner.build_datamodule(cfg.data, models)
    dm.setup("fit")
    info = runner.data_info(dm, cfg.data, models)
    if int(cfg.method.get("max_steps", 0) or 0) == 0:
        cfg.method.max_steps = int(cfg.trainer.max_steps)
    model = get_method(str(cfg.method.name))(cfg.method, data_info=info)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    ckpt_cb = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), save_last=True, save_top_k=0)
    trainer = runner.build_trainer(cfg.trainer, run_dir, None, [ckpt_cb])
    trainer.fit(model, datamodule=dm, weights_only=True)
    return Path(ckpt_cb.last_model_path)


def score(ckpt: Path, data_cfg: Mapping[str, Any], trainer_cfg: Mapping[str, Any], splits: Sequence[str],
          out_dir: Path, body_models: Optional[str] = None) -> Dict[str, Dict[str, float]]:
    """Score a checkpoint on ``data_cfg``'s test splits exactly as ``eval.py`` does (no images)."""
    from zoo import checkpoints, runner

    model = checkpoints.load(ckpt, body_models)
    dm = runner.build_datamodule(data_cfg, model.data_info.get("body_models"))
    dm.setup("test")
    wanted = [s for s in splits if s in dm.test_split_names]
    if not wanted:
        raise ConfigError(f"none of the splits {list(splits)} is available; the data has {dm.test_split_names}")
    dm.test_splits = wanted
    model.test_split_names = wanted
    model.image_dir = None
    model.test_results = {}
    trainer = runner.build_trainer(trainer_cfg, out_dir, None)
    trainer.test(model, datamodule=dm, verbose=False)
    return {split: {k: float(v) for k, v in values.items()} for split, values in model.test_results.items()}


def sweep_rows(results: Mapping[str, Mapping[float, Mapping[str, Mapping[str, float]]]],
               keys: Sequence[str]) -> tuple[List[str], List[Dict[str, Any]]]:
    """Columns and rows (method, level, split, headline metrics, ``d_<psnr key>`` = change from level 0)."""
    psnr = keys[0]
    rows = []
    for method, by_level in results.items():
        base = by_level.get(0.0, {})
        for level in sorted(by_level):
            for split, values in by_level[level].items():
                row = {"method": method, "level": float(level), "split": split}
                row.update({k: values.get(k) for k in keys})
                ref = base.get(split, {}).get(psnr)
                row[f"d_{psnr}"] = None if ref is None or values.get(psnr) is None else values[psnr] - ref
                rows.append(row)
    return ["method", "level", "split", *keys, f"d_{psnr}"], rows


_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def line_chart(rows: Sequence[Mapping[str, Any]], key: str, path: Path) -> str:
    """Headline PSNR against the noise level: one line per (method, split). Returns the backend
    ("matplotlib" when installed, else "PIL"); written through a temporary file."""
    series: Dict[str, List[tuple]] = {}
    for r in rows:
        if r.get(key) is not None:
            series.setdefault(f"{r['method']} {r['split']}", []).append((r["level"], r[key]))
    from zoo.compare import save_chart

    def draw(ax) -> None:
        for name, pts in series.items():
            ax.plot(*zip(*sorted(pts)), marker="o", label=name, linestyle="--" if name.endswith("pose") else "-")
        ax.set_xlabel("pose-noise level (1 = hmr)")

    return save_chart(path, (6, 4), f"{key} (dB)", draw, lambda tmp: _pil_lines(series, key, tmp))


def _pil_lines(series: Mapping[str, List[tuple]], key: str, out: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    left, top, w, h = 60, 24, 420, 260
    img = Image.new("RGB", (left + w + 30, top + h + 40 + 14 * len(series)), "white")
    draw = ImageDraw.Draw(img)
    xs = [x for pts in series.values() for x, _ in pts] or [0.0, 1.0]
    ys = [y for pts in series.values() for _, y in pts] or [0.0, 1.0]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys) - 0.5, max(ys) + 0.5

    def at(x: float, y: float) -> tuple:
        return (left + w * (x - x0) / (x1 - x0), top + h - h * (y - y0) / (y1 - y0))

    draw.line([(left, top), (left, top + h), (left + w, top + h)], fill="black")
    for t in range(5):
        y = y0 + (y1 - y0) * t / 4
        draw.text((4, at(x0, y)[1] - 6), f"{y:.1f}", fill="black", font=font)
    for x in sorted(set(xs)):
        draw.text((at(x, y0)[0] - 6, top + h + 4), f"{x:g}", fill="black", font=font)
    draw.text((4, 4), f"{key} (dB) vs pose-noise level", fill="black", font=font)
    for i, (name, pts) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        coords = [at(x, y) for x, y in sorted(pts)]
        if len(coords) > 1:
            draw.line(coords, fill=colour, width=3)
        for cx, cy in coords:
            draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=colour)
        ly = top + h + 24 + 14 * i
        draw.rectangle([left, ly, left + 10, ly + 10], fill=colour)
        draw.text((left + 16, ly - 1), name, fill="black", font=font)
    img.save(out, format="PNG")


def run_sweep(methods: Sequence[str], data_cfg: Mapping[str, Any], out_dir: Path, levels: Sequence[float],
              mode: str = "train", seed: int = 0, preset: Optional[str] = None, overrides: Sequence[str] = (),
              ckpts: Optional[Mapping[str, str]] = None, trainer_cfg: Optional[Mapping[str, Any]] = None,
              splits: Sequence[str] = ("test_view", "test_pose"), body_models: Optional[str] = None,
              wandb_log: bool = False) -> Dict[str, Any]:
    """Run the sweep (see the module doc) and write its table and plot.

    Returns:
        ``{"markdown", "csv", "png", "json", "columns", "rows", "results"}``;
        ``results[method][level][split][metric]``.
    """
    from zoo import compare
    from zoo.core.metrics import EvalProtocol
    from zoo.core.pose_noise import resolve_level

    if mode not in MODES:
        raise ConfigError(f"pose_noise.mode must be one of {MODES}, got {mode!r}")
    if not methods:
        raise ConfigError("sweep=pose_noise needs methods=[...] (e.g. methods=[gaussian_avatar,humansplat_hmr])")
    for m in methods:
        if m in POSE_FREE:
            raise ConfigError(f"{m} builds its avatar from context images without any pose: the single-subject "
                              "pose-noise sweep does not apply to it (bench/bench_nopo_avatar.py compares its "
                              "target-pose noise with GaussianAvatar's)")
    if data_cfg.get("multi_subject"):
        raise ConfigError("sweep=pose_noise scores one subject: pick a single-subject data config")
    levels = sorted({resolve_level(v) for v in levels} | {0.0})
    ckpts = dict(ckpts or {})
    unknown = sorted(set(ckpts) - set(methods))
    if unknown or (ckpts and mode != "target"):
        raise ConfigError(f"pose_noise.ckpts: checkpoints are for mode=target, keyed by a swept method; got {sorted(ckpts)}")
    data_cfg = _plain(data_cfg)
    data_cfg.pop("poses", None)
    trainer_cfg = _plain(trainer_cfg) if trainer_cfg else {"accelerator": "cpu", "devices": 1}
    trainer_cfg.update(enable_progress_bar=False, enable_model_summary=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: Dict[str, Dict[float, Any]] = {m: {} for m in methods}
    protocol, subject = None, "?"
    start = time.time()
    clean_ckpt: Dict[str, Path] = {m: Path(p) for m, p in ckpts.items()}
    from tqdm.auto import tqdm

    bar = tqdm(total=len(levels) * len(methods), desc=f"pose-noise sweep ({mode})", unit="run")
    for level in levels:
        folder = out_dir / f"level_{_level_name(level)}"
        data = copy.deepcopy(data_cfg)
        if level > 0:  # level 0: the plain data, so its row is eval.py's on the same checkpoint
            split = "train" if mode == "train" else None
            data["poses"] = str(noisy_poses(data_cfg, level, seed, split, folder / "poses.npz", body_models))
        for m in methods:
            bar.set_postfix_str(f"{m} level {level:g}")
            if mode == "train":
                ckpt = train_once(m, data, folder / m, preset, overrides, body_models, seed)
            else:
                if m not in clean_ckpt:
                    clean_ckpt[m] = train_once(m, data_cfg, out_dir / "clean" / m, preset, overrides, body_models, seed)
                ckpt = clean_ckpt[m]
            results[m][level] = score(ckpt, data, trainer_cfg, splits, folder / m, body_models)
            bar.update(1)
            if protocol is None:
                from zoo import checkpoints

                loaded = checkpoints.load(ckpt, body_models)
                protocol, subject = loaded.protocol, str(loaded.data_info.get("subject", "?"))
    bar.close()
    keys = list(protocol.primary_keys) if isinstance(protocol, EvalProtocol) else ["psnr", "ssim", "lpips"]
    columns, rows = sweep_rows(results, keys)
    for row in rows:  # one subject and protocol for every row (compare.to_markdown checks)
        row.update(subject=subject, protocol=str(getattr(protocol, "name", "")))
    md, cs, png, js = (out_dir / f"sweep.{ext}" for ext in ("md", "csv", "png", "json"))
    note = (f"\npose-noise sweep ({mode} mode: " + ("each method trained on the noisy training poses of each level"
            if mode == "train" else "clean-trained checkpoints scored with noisy poses") +
            f"), zoo.core.pose_noise seed {seed}, levels {levels}\n")
    compare.write_text_atomic(md, compare.to_markdown([c for c in columns], rows) + note)
    compare.write_text_atomic(cs, compare.to_csv(columns, rows))
    backend = line_chart(rows, keys[0], png)
    compare.write_text_atomic(js, json.dumps({"mode": mode, "seed": seed, "levels": levels, "methods": list(methods),
                           "protocol": protocol.as_dict() if protocol is not None else None,
                           "results": {m: {str(k): v for k, v in r.items()} for m, r in results.items()},
                           "seconds": round(time.time() - start, 1)}, indent=2))
    if wandb_log:
        run = compare.wandb_run(project="avatar-zoo", job_type="sweep", name=f"pose_noise_{mode}", dir=str(out_dir),
                                config={"mode": mode, "seed": seed, "levels": levels, "methods": list(methods)})
        compare.log_table(run, "sweep", columns, rows, png)
        run.finish()
    return {"markdown": md, "csv": cs, "png": png, "json": js, "backend": backend, "columns": columns,
            "rows": rows, "results": results}


def run(cfg: DictConfig) -> int:
    """``eval.py sweep=pose_noise ...``: one composed eval config; returns the exit code (2: user error)."""
    from zoo import compare

    try:
        if str(cfg.sweep) != "pose_noise":
            raise ConfigError(f"unknown sweep {cfg.sweep!r}; the one sweep is sweep=pose_noise")
        if not cfg.get("data"):
            raise ConfigError("sweep=pose_noise needs data=<name> (and data.root=... for a real dataset)")
        opts = cfg.get("pose_noise") or {}
        out_dir = Path(str(cfg.out_dir)) if cfg.out_dir else Path(f"runs/sweep_pose_noise_{time.strftime('%Y%m%d-%H%M%S')}")
        logger = cfg.get("logger") or {}
        result = run_sweep(
            list(cfg.get("methods") or []), cfg.data, out_dir, list(opts.get("levels") or [0, 1]),
            mode=str(opts.get("mode", "train")), seed=int(opts.get("seed", 0)), preset=opts.get("preset"),
            overrides=list(opts.get("train_overrides") or []), ckpts=_plain(opts.get("ckpts") or {}),
            trainer_cfg=cfg.trainer, splits=list(cfg.splits), body_models=cfg.body_models,
            wandb_log=compare.wandb_active(logger.get("kind") == "wandb"))
    except (ConfigError, FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(result["markdown"].read_text(), end="")
    print(f"wrote {result['markdown']}, {result['csv']}, {result['png']} ({result['backend']}), {result['json']}")
    return 0
