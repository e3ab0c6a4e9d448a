"""HumanSplatHMR on the default synthetic subject (ZJU-MoCap layout, 128x128, monocular training
camera, 7 novel-view cameras, held-out novel poses) with noised poses, trained on CPU twice: with
pose refinement, and as the same avatar trained on the frozen noisy poses. Prints the pose errors
(MPJPE, PA-MPJPE, root translation; initial vs refined), the image metrics of both runs beside the
copy-the-nearest-training-frame baseline of the same frames, seconds per step and wall time.

    .venv/bin/python bench/bench_humansplat_hmr.py [--steps 1500] [--level hmr] [--out runs/bench_hs]

Noise: zoo.core.pose_noise level 1 ("hmr", seed 0): 5.5 degrees per joint axis, 3 degrees of global
orientation and 3 cm of translation per axis, half drift / half per-frame jitter — MPJPE 80 mm,
PA-MPJPE 54 mm, root translation 50 mm on this subject's training frames. The same runs back the
slow test (tests/test_slow_humansplat_hmr.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _train(out: Path, steps: int, level: str, refine: bool, data_root: Path | None, extra: list[str]) -> dict:
    import train as train_script

    args = ["experiment=humansplat_hmr_synthetic", "data=synthetic", "logger=csv", f"run_dir={out}",
            f"trainer.max_steps={steps}", f"trainer.val_check_interval={max(steps // 6, 1)}",
            f"method.init_poses.noise.level={level}", f"method.pose_opt.enabled={str(refine).lower()}",
            "trainer.enable_progress_bar=false"]
    if data_root is not None:
        args.append(f"data.root={data_root}")
    start = time.time()
    code = train_script.main(args + list(extra))
    if code != 0:
        raise SystemExit(f"train.py exited with {code}")
    result = json.loads((out / "metrics.json").read_text())
    result["pose"] = json.loads((out / "pose_metrics.json").read_text())
    result["wall_seconds"] = round(time.time() - start, 1)
    return result


def run(steps: int, out: Path, level: str = "hmr", data_root: Path | None = None,
        extra: list[str] | None = None) -> dict:
    """Train the refined and the frozen-pose avatar; returns both runs' metrics.json + pose_metrics.json."""
    extra = list(extra or [])
    return {
        "level": level,
        "refined": _train(out / "refined", steps, level, True, data_root, extra),
        "frozen": _train(out / "frozen", steps, level, False, data_root, extra),
    }


def report(result: dict) -> None:
    """Print pose errors and image metrics side by side."""
    ref, frz = result["refined"], result["frozen"]
    pose = ref["pose"]["mean"]
    per_step = ref["fit_seconds"] / max(ref["steps"], 1)
    print(f"HumanSplatHMR, synthetic 128x128, noise level {result['level']}, {ref['steps']} steps, "
          f"fit {ref['fit_seconds']} s ({per_step:.3f} s/step), frozen-pose run {frz['fit_seconds']} s")
    print(f"  poses ({len(ref['pose']['frame_ids'])} training frames, mm)   initial -> refined")
    for key, name in (("mpjpe", "MPJPE"), ("pa_mpjpe", "PA-MPJPE"), ("transl_err", "root transl")):
        a, b = pose[f"{key}_init"], pose[key]
        print(f"    {name:<12} {a:8.2f} -> {b:8.2f}   ({100 * (b - a) / a:+.1f} %)")
    base = ref.get("baseline", {}).get("metrics", {})
    for split in ("test_view", "test_pose"):
        if split not in ref["metrics"]:
            continue
        print(f"  {split}")
        rows = [("refined", ref["metrics"][split]), ("frozen", frz["metrics"][split])]
        if split in base:
            rows.append(("nearest", base[split]))
        for name, v in rows:
            print(f"    {name:<8} crop PSNR {v['psnr_crop']:.2f} SSIM {v['ssim_crop']:.4f} LPIPS {v['lpips_crop']:.4f} | "
                  f"full PSNR {v['psnr']:.2f} SSIM {v['ssim']:.4f} LPIPS {v['lpips']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500, help="training steps of each run")
    parser.add_argument("--level", default="hmr", help="pose-noise level (zoo.core.pose_noise.NOISE_LEVELS or a number)")
    parser.add_argument("--out", default="runs/bench_humansplat_hmr", help="run folder")
    parser.add_argument("--data-root", default=None, help="synthetic subject folder (default: configs/data/synthetic.yaml)")
    args = parser.parse_args()
    result = run(args.steps, Path(args.out), args.level, Path(args.data_root) if args.data_root else None)
    report(result)


if __name__ == "__main__":
    main()
