"""GaussianAvatar on the default synthetic subject (ZJU-MoCap layout, 128x128, monocular training
camera, 7 novel-view cameras, held-out novel poses), trained on CPU: prints the person-crop and
full-image metrics of both test splits beside the copy-the-nearest-training-frame baseline on the
same frames (honest scoring: the render is scored as drawn, on the protocol's background), the
margin, seconds per step and the wall time.

    .venv/bin/python bench/bench_gaussian_avatar.py [--steps 2000] [--out runs/bench_ga]

The same run backs the slow test (tests/test_slow_gaussian_avatar.py) and the README numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_preset(experiment: str, steps: int, out: Path, data_root: Path | None = None,
               extra: list[str] | None = None) -> dict:
    """Train and test one experiment preset on the synthetic subject (validating 8 times); returns
    metrics.json's content plus the wall time. Every method's bench runs through this."""
    import train as train_script

    args = [f"experiment={experiment}", "data=synthetic", "logger=csv", f"run_dir={out}",
            f"trainer.max_steps={steps}", f"trainer.val_check_interval={max(steps // 8, 1)}",
            "trainer.enable_progress_bar=false"]
    if data_root is not None:
        args.append(f"data.root={data_root}")
    start = time.time()
    code = train_script.main(args + list(extra or []))
    if code != 0:
        raise SystemExit(f"train.py exited with {code}")
    result = json.loads((out / "metrics.json").read_text())
    result["wall_seconds"] = round(time.time() - start, 1)
    return result


def run(steps: int, out: Path, data_root: Path | None = None, extra: list[str] | None = None) -> dict:
    """Train and test GaussianAvatar (`gaussian_avatar_synthetic`); see `run_preset`."""
    return run_preset("gaussian_avatar_synthetic", steps, out, data_root, extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="training steps")
    parser.add_argument("--out", default="runs/bench_gaussian_avatar", help="run folder")
    parser.add_argument("--data-root", default=None, help="synthetic subject folder (default: configs/data/synthetic.yaml)")
    args = parser.parse_args()
    result = run(args.steps, Path(args.out), Path(args.data_root) if args.data_root else None)
    report(result, "GaussianAvatar")


def report(result: dict, name: str) -> None:
    """Print a run's metrics beside the nearest-training-frame baseline of the same frames."""
    m, base = result["metrics"], result.get("baseline", {}).get("metrics", {})
    per_step = result["fit_seconds"] / max(result["steps"], 1)
    print(f"{name}, synthetic 128x128, {result['steps']} steps, fit {result['fit_seconds']} s "
          f"({per_step:.3f} s/step), total {result['wall_seconds']} s; selection: {result.get('model_selection')}")
    for split in ("test_view", "test_pose"):
        if split not in m:
            continue
        v, b = m[split], base.get(split, {})
        line = (f"  {split:<10} crop PSNR {v['psnr_crop']:.2f} SSIM {v['ssim_crop']:.4f} LPIPS {v['lpips_crop']:.4f} | "
                f"full PSNR {v['psnr']:.2f} SSIM {v['ssim']:.4f} LPIPS {v['lpips']:.4f}")
        if b:
            line += (f"\n  {'  nearest':<10} crop PSNR {b['psnr_crop']:.2f} SSIM {b['ssim_crop']:.4f} LPIPS "
                     f"{b['lpips_crop']:.4f} | full PSNR {b['psnr']:.2f}   -> margin {v['psnr_crop'] - b['psnr_crop']:+.2f} dB crop")
        print(line)


if __name__ == "__main__":
    main()
