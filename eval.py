"""Score a checkpoint on its dataset's protocol (novel-view and novel-pose splits).

    python eval.py ckpt_path=runs/gaussian_avatar_synthetic_.../checkpoints/last.ckpt
    python eval.py ckpt_path=... data=people_snapshot data.root=/data/ps/male-3-casual

Writes metrics.json and the rendered test images into out_dir (default: next to the checkpoint).
"""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from omegaconf import OmegaConf

    from zoo.config import ConfigError, compose

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = compose("eval", argv)
        if OmegaConf.is_missing(cfg, "ckpt_path"):
            raise ConfigError("ckpt_path is required: python eval.py ckpt_path=runs/.../last.ckpt")
        from zoo import runner

        model = runner.load_module(cfg.ckpt_path, cfg.body_models)
        data_cfg = cfg.data if cfg.get("data") else OmegaConf.create(model.data_info.get("data") or {})
        if not data_cfg:
            raise ConfigError("the checkpoint records no data section: pass data=<format> data.root=...")
        dm = runner.build_datamodule(data_cfg, cfg.body_models or model.data_info.get("body_models"))
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
    baseline = runner.baseline_scores(dm, list(model.test_results), model.data_info.get("body_models"),
                                      model.protocol.as_dict()) if cfg.baseline else {}
    print(runner.format_table(model.test_results, baseline))
    runner.write_json_atomic(out_dir / "metrics.json", {
        "method": model.method_name, "checkpoint": str(ckpt), "subject": model.data_info.get("subject"),
        "protocol": model.protocol.as_dict(), "metrics": model.test_results,
        "baseline": {"method": "copy of the nearest training frame, moved to the body's projected centre (zoo.baseline)",
                     "metrics": baseline},
    })
    print(f"metrics: {out_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
