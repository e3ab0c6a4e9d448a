"""ExAvatar on the synthetic SMPL-X subject (X-Humans layout, 128x128, one camera per frame on a
circle; the 12 held-out frames are new poses seen from new camera positions), trained on CPU:
prints the person-crop and full-image metrics of the held-out split with and without test-time
pose fitting (avatar frozen), beside the copy-the-nearest-training-frame baseline on the same
frames, and the wall time.

    .venv/bin/python bench/bench_exavatar.py [--steps 1000] [--fit-steps 5] [--out runs/bench_exavatar]
        [--gaussian-avatar]   # also train GaussianAvatar on the same subject for its row

The same run backs the slow test (tests/test_slow_exavatar.py) and the README numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _train(args: List[str]) -> Dict:
    import train as train_script

    code = train_script.main(args)
    if code != 0:
        raise SystemExit(f"train.py exited with {code}")
    return json.loads((Path(args[[a.startswith("run_dir=") for a in args].index(True)][8:]) / "metrics.json").read_text())


def fitted_scores(ckpt: str, steps: int) -> Dict[str, Dict[str, float]]:
    """Score a checkpoint's test splits with test-time pose fitting on (`<split>` and `<split>_fit`)."""
    from zoo import runner

    model = runner.load_module(ckpt)
    model.cfg.test_fit.enabled = True
    model.cfg.test_fit.steps = int(steps)
    dm = runner.build_datamodule(dict(model.data_info["data"]), model.data_info.get("body_models"))
    dm.setup("test")
    model.test_split_names = list(dm.test_split_names)
    trainer = runner.build_trainer({"accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                                    "enable_model_summary": False}, Path(ckpt).parent, None)
    trainer.test(model, datamodule=dm, verbose=False)
    return model.test_results


def run(steps: int, out: Path, data_root: Optional[Path] = None, extra: Optional[List[str]] = None,
        fit_steps: int = 0) -> Dict:
    """Train and test ExAvatar (and optionally score it with test-time fitting).

    Returns:
        metrics.json's content plus `wall_seconds` and, with `fit_steps`, `fitted` (per split, with
        and without fitting) and `fit_seconds_eval`.
    """
    args = ["experiment=exavatar_synthetic", "logger=csv", f"run_dir={out}", f"trainer.max_steps={steps}",
            f"trainer.val_check_interval={max(steps // 4, 1)}", "trainer.enable_progress_bar=false"]
    if data_root is not None:
        args.append(f"data.root={data_root}")
    start = time.time()
    result = _train(args + list(extra or []))
    result["wall_seconds"] = round(time.time() - start, 1)
    if fit_steps > 0:
        t = time.time()
        result["fitted"] = fitted_scores(result["checkpoint"], fit_steps)
        result["fit_seconds_eval"] = round(time.time() - t, 1)
    return result


def _row(name: str, v: Dict[str, float]) -> str:
    return (f"  {name:<34} crop PSNR {v['psnr_crop']:6.2f} SSIM {v['ssim_crop']:.4f} LPIPS {v['lpips_crop']:.4f} | "
            f"full PSNR {v['psnr']:6.2f} SSIM {v['ssim']:.4f} LPIPS {v['lpips']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="training steps")
    parser.add_argument("--fit-steps", type=int, default=5, help="test-time fitting steps per frame (paper: 5; 0: skip)")
    parser.add_argument("--out", default="runs/bench_exavatar", help="run folder")
    parser.add_argument("--data-root", default=None, help="synthetic subject folder (default: the preset's)")
    parser.add_argument("--gaussian-avatar", action="store_true", help="train GaussianAvatar on the same subject too")
    args = parser.parse_args()
    out = Path(args.out)
    data_root = Path(args.data_root) if args.data_root else None
    result = run(args.steps, out / "exavatar", data_root, fit_steps=args.fit_steps)
    ga = None
    if args.gaussian_avatar:
        ga_args = ["method=gaussian_avatar", "data=x_humans", "experiment=exavatar_synthetic", "logger=csv",
                   f"run_dir={out / 'gaussian_avatar'}", "trainer.max_steps=2000", "trainer.val_check_interval=250",
                   "trainer.enable_progress_bar=false", "method.name=gaussian_avatar", "method.stage1_steps=1000",
                   "method.pose_opt.enabled=false"]
        if data_root is not None:
            ga_args.append(f"data.root={data_root}")
        t = time.time()
        ga = _train(ga_args)
        ga["wall_seconds"] = round(time.time() - t, 1)
    print(f"ExAvatar, synthetic SMPL-X 128x128, {result['steps']} steps, fit {result['fit_seconds']} s, "
          f"total {result['wall_seconds']} s (+{result.get('fit_seconds_eval', 0)} s test-time fitting)")
    base = result.get("baseline", {}).get("metrics", {})
    for split, values in result["metrics"].items():
        print(f"{split} ({int(base.get(split, {}).get('frames', 0))} frames)")
        print(_row("ExAvatar", values))
        fitted = result.get("fitted", {}).get(f"{split}_fit")
        if fitted:
            print(_row(f"ExAvatar + test-time fitting ({args.fit_steps})", fitted))
        if ga and split in ga["metrics"]:
            print(_row(f"GaussianAvatar ({ga['steps']} steps, {ga['wall_seconds']} s)", ga["metrics"][split]))
        if split in base:
            print(_row("nearest training frame", base[split]))
            print(f"  ExAvatar - baseline: {values['psnr_crop'] - base[split]['psnr_crop']:+.2f} dB crop PSNR")


if __name__ == "__main__":
    main()
