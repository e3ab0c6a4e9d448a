"""Score a checkpoint on its dataset's protocol (novel-view and novel-pose splits).

    python eval.py ckpt_path=runs/gaussian_avatar_synthetic_.../checkpoints/last.ckpt
    python eval.py ckpt_path=... data=people_snapshot data.root=/data/ps/male-3-casual
    python eval.py checkpoint=gaussian_avatar.synthetic_s0     # a registry checkpoint (zoo.checkpoints)
    python eval.py compare runs/a runs/b ... [--out DIR]        # one table + bar chart across runs (zoo.compare)
    python eval.py sweep=pose_noise methods=[gaussian_avatar,humansplat_hmr] data=synthetic  # pose-noise sweep (zoo.sweep)

A Hydra command line like train.py's (--help, -m, --cfg job, +key=value, ~key; zoo.config).
Writes metrics.json and the rendered test images into out_dir (default: next to the checkpoint).
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); returns the exit code (2: a user error)."""
    from zoo.config import run_app

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        from zoo.compare import main as compare_main

        return compare_main(argv[1:])
    return run_app("eval", argv, run)


def apply_method_changes(model, changes) -> dict:
    """Apply `+method.KEY=VALUE` scoring-time changes to a loaded model's method config (e.g.
    NoPo-Avatar's test-time pose alignment, `+method.pose_align.enabled=true`); every dotted key must
    exist in the checkpoint's config. Returns the applied changes as {dotted key: value}."""
    from omegaconf import OmegaConf

    from zoo.config import ConfigError

    plain = OmegaConf.to_container(changes, resolve=True) if OmegaConf.is_config(changes) else dict(changes)
    plain.pop("_name", None)
    flat: dict = {}

    def walk(prefix: str, node) -> None:
        for key, value in node.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(dotted, value)
            else:
                flat[dotted] = value

    walk("", plain)
    for dotted, value in flat.items():
        node = model.cfg
        parts = dotted.split(".")
        for i, part in enumerate(parts):
            if not OmegaConf.is_dict(node) or part not in node:
                where = ".".join(["method"] + parts[:i])
                valid = ", ".join(sorted(map(str, node.keys()))) if OmegaConf.is_dict(node) else "(a value)"
                raise ConfigError(f"method.{dotted}: the checkpoint's {where} has no {part!r}; valid keys: {valid}")
            node = node[part]
        OmegaConf.update(model.cfg, dotted, value, merge=False)
    return flat


def run(cfg) -> int:
    """Score one composed config (one Hydra job); returns the exit code."""
    from omegaconf import OmegaConf

    from zoo.config import ConfigError

    if cfg.get("sweep"):  # sweep=pose_noise methods=[...] data=...: the robustness sweep (zoo.sweep)
        from zoo.sweep import run as sweep_run

        return sweep_run(cfg)
    try:
        if bool(cfg.ckpt_path) == bool(cfg.checkpoint):
            raise ConfigError("pass one of ckpt_path=runs/.../last.ckpt or checkpoint=NAME (python -m zoo checkpoints list)")
        from zoo import checkpoints, runner

        if cfg.checkpoint:
            cfg.ckpt_path = str(checkpoints.download(str(cfg.checkpoint)))
            if not cfg.out_dir:
                cfg.out_dir = f"runs/eval_{cfg.checkpoint}"
        model = checkpoints.load(cfg.ckpt_path, cfg.body_models)
        changed = apply_method_changes(model, cfg.get("method") or {})
        data_cfg = cfg.data if cfg.get("data") else OmegaConf.create(model.data_info.get("data") or {})
        if not data_cfg:
            raise ConfigError("the checkpoint records no data section: pass data=<format> data.root=...")
        dm = runner.build_datamodule(data_cfg, model.data_info.get("body_models"))
        dm.setup("test")
        wanted = [s for s in cfg.splits if s in dm.test_split_names]
        if not wanted:
            raise ConfigError(f"none of the splits {list(cfg.splits)} is available; the data has {dm.test_split_names}")
    except (ConfigError, FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    ckpt = Path(str(cfg.ckpt_path))
    out_dir = Path(str(cfg.out_dir)) if cfg.out_dir else ckpt.parent.parent / f"eval_{ckpt.stem}"
    dm.test_splits = wanted
    model.test_split_names = wanted
    model.image_dir = out_dir if cfg.save_images else None
    trainer = runner.build_trainer(cfg.trainer, out_dir, None)
    trainer.test(model, datamodule=dm, verbose=False)
    if not trainer.is_global_zero:  # DDP: the metrics are reduced on every rank; rank 0 reports and writes
        return 0
    baseline = runner.baseline_scores(dm, list(model.test_results), model.data_info.get("body_models"),
                                      model.protocol.as_dict()) if cfg.baseline else {}
    base_label, base_method = runner.baseline_kind(dm)
    print(runner.format_table(model.test_results, baseline, base_label))
    runner.write_json_atomic(out_dir / "metrics.json", {
        "method": model.method_name, "checkpoint": str(cfg.checkpoint or ckpt), "subject": model.data_info.get("subject"),
        "protocol": model.protocol.as_dict(), "metrics": model.test_results,
        "baseline": {"method": base_method, "metrics": baseline}, "method_changes": changed,
    })
    print(f"metrics: {out_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
