"""Train an avatar method by name.

    python train.py method=gaussian_avatar data=people_snapshot data.root=/data/ps/male-3-casual
    python train.py experiment=gaussian_avatar_tiny logger=csv
    python train.py -m method=gaussian_avatar,gs_avatar seed=0,1   # a Hydra sweep: 4 runs
    python train.py --help                                          # the config groups and options
    python train.py experiment=gaussian_avatar_tiny ckpt_path=runs/X/checkpoints/last.ckpt  # resume into runs/X

A Hydra command line (zoo.config): `group=name` (method, data, trainer, logger, experiment),
`dotted.key=value`, `+key=value`, `~key`, `run_dir=DIR` (= hydra.run.dir), -m, --cfg job.
Writes checkpoints (last and best), logs, the resolved config and metrics.json into run_dir, and
prints the final test metrics as a table.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); returns the exit code (2: a user error)."""
    from zoo.config import run_app

    return run_app("train", list(sys.argv[1:] if argv is None else argv), run)


def run(cfg) -> int:
    """Train one composed config (one Hydra job); returns the exit code."""
    from zoo.config import ConfigError, to_yaml

    try:
        run_dir = Path(str(cfg.run_dir))
        from zoo import runner

        import lightning as L

        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
        body_models = runner.resolve_body_models(cfg.body_models, cfg.data)
        dm = runner.build_datamodule(cfg.data, body_models, seed=int(cfg.seed))
        dm.setup("fit")
        info = runner.data_info(dm, cfg.data, body_models)
        if int(cfg.method.get("max_steps", 0) or 0) == 0:
            cfg.method.max_steps = int(cfg.trainer.max_steps)
        from zoo.registry import get_method

        model = get_method(str(cfg.method.name))(cfg.method, data_info=info)
        resumed = None
        if cfg.get("ckpt_path"):
            resumed = runner.check_resume(cfg.ckpt_path, cfg.method)  # weights_only=True, refused before any output
    except (ConfigError, FileNotFoundError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from lightning.pytorch.callbacks import ModelCheckpoint

    chief = rank_zero_only.rank == 0  # DDP: one process writes the run folder's files and reports
    run_dir.mkdir(parents=True, exist_ok=True)
    if chief:
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    if resumed is not None and chief:
        print(f"resuming {run_dir} from step {int(resumed.get('global_step') or 0)} ({cfg.ckpt_path})", flush=True)
    # model selection only on held-out validation items (never a test split); without any, the last
    # checkpoint is the one scored, and metrics.json says so
    if dm.has_validation:
        selection = f"best val/psnr over {len(dm.split_indices(dm.val_split))} held-out validation items"
        ckpt_cb = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="best", monitor="val/psnr",
                                  mode="max", save_last=True, save_top_k=1, enable_version_counter=False)
    else:
        selection = "last checkpoint (the data has no validation items outside its test splits)"
        ckpt_cb = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), save_last=True, save_top_k=0,
                                  enable_version_counter=False)
    # checkpoints/last.ckpt every `checkpoint_every` steps too: the point a killed run resumes from
    # (one file, overwritten: no last-v1.ckpt, and a resumed run writes into the same names)
    every = int(cfg.get("checkpoint_every") or 0)
    callbacks = [ckpt_cb] + ([ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), save_last=True, save_top_k=0,
                                              every_n_train_steps=every, enable_version_counter=False)]
                             if every > 0 else [])
    callbacks.append(runner.step_seed_callback(int(cfg.seed)))
    trainer = runner.build_trainer(cfg.trainer, run_dir, _logger(cfg, run_dir, chief), callbacks)
    print(f"training {cfg.method.name} on {info['subject']} ({len(model.data_info['frame_ids'])} training frames) "
          f"-> {run_dir}")
    start = time.time()
    from zoo.methods.base import NonFiniteError

    try:
        trainer.fit(model, datamodule=dm, ckpt_path=cfg.ckpt_path, weights_only=True)
    except NonFiniteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    fit_seconds = time.time() - start
    results = {}
    if cfg.test_after_fit and dm.test_split_names:
        best = ckpt_cb.best_model_path or None
        model.test_results = {}
        trainer.test(model, datamodule=dm, ckpt_path=best, verbose=False)
        results = model.test_results  # reduced over every DDP rank (torchmetrics)
    if not trainer.is_global_zero:
        return 0
    baseline = runner.baseline_scores(dm, list(results), model.data_info.get("body_models"),
                                      model.protocol.as_dict()) if results else {}
    base_label, base_method = runner.baseline_kind(dm)
    print(runner.format_table(results, baseline, base_label))
    runner.write_json_atomic(run_dir / "metrics.json", {
        "method": str(cfg.method.name), "subject": info["subject"], "fit_seconds": round(fit_seconds, 1),
        "steps": int(trainer.global_step), "checkpoint": ckpt_cb.best_model_path or ckpt_cb.last_model_path,
        "model_selection": selection, "protocol": info["protocol"], "metrics": results,
        "baseline": {"method": base_method, "metrics": baseline},
    })
    print(f"metrics: {run_dir / 'metrics.json'}  (trained {fit_seconds:.0f} s)")
    return 0


def _logger(cfg, run_dir: Path, chief: bool):
    """runner.build_logger, a W&B logger bound to the run folder's W&B run: the id is kept in
    `run_dir/wandb_id` (written by the first run, read by a resumed one) and given to wandb.init
    through WANDB_RUN_ID / WANDB_RESUME=allow, so a resumed run logs into the same W&B run."""
    import os

    from zoo import runner

    if str((cfg.get("logger") or {}).get("kind", "")) != "wandb":
        return runner.build_logger(cfg, run_dir)
    id_file = run_dir / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else ""
    if not run_id:
        import uuid

        run_id = uuid.uuid4().hex[:12]
        if chief:
            tmp = id_file.with_suffix(".tmp")
            tmp.write_text(run_id + "\n")
            os.replace(tmp, id_file)
    saved = {key: os.environ.get(key) for key in ("WANDB_RUN_ID", "WANDB_RESUME")}
    os.environ.update(WANDB_RUN_ID=run_id, WANDB_RESUME="allow")
    try:
        logger = runner.build_logger(cfg, run_dir)
        if logger is not None and chief:
            _ = logger.experiment  # wandb.init now, while the id is in the environment
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return logger


if __name__ == "__main__":
    sys.exit(main())
